//! Restarting the API server of a control plane of our own while a client keeps using it.
//! Needs the binaries from `hack/provision.sh` (`TOKEN_ROTATOR_K8S_BIN` or the default cache).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};
use testkit::ControlPlane;

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const NAME: &str = "survives-restart";
const OUTAGE: Duration = Duration::from_secs(2);

#[tokio::test]
async fn clients_reconnect_after_an_apiserver_restart() -> Result<()> {
    let started = Instant::now();
    let cp = ControlPlane::start().await?;
    eprintln!("control plane up in {:?}", started.elapsed());

    // Created before the restart and used throughout.
    let configmaps: Api<ConfigMap> = Api::namespaced(cp.client(), "default");
    let data = BTreeMap::from([("key".to_owned(), "value".to_owned())]);
    let configmap = ConfigMap {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            ..ObjectMeta::default()
        },
        data: Some(data.clone()),
        ..ConfigMap::default()
    };
    configmaps
        .create(&PostParams::default(), &configmap)
        .await?;

    let restart = send(async {
        let begun = Instant::now();
        cp.restart_apiserver(OUTAGE).await?;
        Ok::<_, testkit::Error>(begun.elapsed())
    });
    // Polls with the same client until a request fails: the outage is observed, not assumed.
    let outage = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match configmaps.get(NAME).await {
                Err(error) => break Ok(error),
                Ok(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Ok(_) => break Err("every request succeeded: no outage seen"),
            }
        }
    };
    let (restarted, during) = tokio::join!(restart, outage);
    let took = restarted?;
    eprintln!("a request during the outage failed: {}", during?);
    eprintln!(
        "restart_apiserver({OUTAGE:?}) took {took:?} ({:?} beyond the outage)",
        took.saturating_sub(OUTAGE)
    );
    assert!(took >= OUTAGE, "{took:?}");

    let back = configmaps.get(NAME).await?;
    assert_eq!(back.data, Some(data));
    // etcd and the controller manager kept running; the new apiserver is tracked.
    cp.check_running()?;
    let log = std::fs::read_to_string(cp.log_path("kube-apiserver"))?;
    let (before, after) = log
        .split_once("--- testkit: restarting kube-apiserver")
        .ok_or("no restart marker in the apiserver log")?;
    assert!(!before.trim().is_empty() && after.lines().count() > 1);

    cp.stop();
    let error = cp.restart_apiserver(Duration::ZERO).await.unwrap_err();
    assert!(matches!(error, testkit::Error::Stopped), "{error}");
    Ok(())
}

/// A chaos test may run the restart in a task of its own.
fn send<F: std::future::Future + Send>(future: F) -> F {
    future
}
