//! Shell completion as a user installs it: the scripts `token-rotator completions SHELL` prints,
//! and the binary installed as `kubectl_complete-token_rotator`, which kubectl runs to complete
//! `kubectl token-rotator …` (with the e2e feature, through the real kubectl).

use std::path::{Path, PathBuf};
use std::process::Command;

const SUBCOMMANDS: [&str; 7] = [
    "crd",
    "run",
    "fetch",
    "status",
    "refresh",
    "authorize",
    "completions",
];

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_token-rotator")
}

fn run(program: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A directory of this test's own with the binary linked in under `name`.
fn linked_as(name: &str, test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "token-rotator-completions-{}-{test}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(binary(), dir.join(name)).unwrap();
    dir
}

#[test]
fn each_shell_script_names_every_subcommand_and_the_run_flags() {
    for shell in ["bash", "zsh", "fish"] {
        let (ok, script, err) = run(Path::new(binary()), &["completions", shell]);
        assert!(ok, "completions {shell}: {err}");
        let words: std::collections::BTreeSet<&str> = script
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .collect();
        for sub in SUBCOMMANDS {
            assert!(words.contains(sub), "{shell} script lacks {sub}:\n{script}");
        }
        // A flag of a subcommand, so the script completes below the first word too.
        assert!(
            script.contains("allowed-token-host"),
            "{shell} script lacks run's --allowed-token-host"
        );
        assert!(
            script.contains("token-rotator"),
            "{shell} script is not for token-rotator"
        );
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let (ok, out, err) = run(Path::new(binary()), &["completions", "tcsh"]);
    assert!(!ok && out.is_empty(), "{out}");
    assert!(err.contains("bash") && err.contains("fish"), "{err}");
}

/// The answers kubectl reads: `value\tdescription` lines, then `:directive`.
fn plugin_answer(words: &[&str], test: &str) -> (Vec<String>, String) {
    let dir = linked_as("kubectl_complete-token_rotator", test);
    let (ok, out, err) = run(&dir.join("kubectl_complete-token_rotator"), words);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ok, "{err}");
    let mut lines: Vec<String> = out.lines().map(str::to_owned).collect();
    let directive = lines.pop().expect("a directive line");
    let values = lines
        .iter()
        .map(|l| l.split('\t').next().unwrap().to_owned())
        .collect();
    (values, directive)
}

#[test]
fn as_kubectl_complete_it_answers_subcommands_flags_and_choices() {
    let (values, directive) = plugin_answer(&[""], "first");
    for sub in SUBCOMMANDS {
        assert!(values.iter().any(|v| v == sub), "{sub} not in {values:?}");
    }
    assert_eq!(directive, ":4", "no file names for a subcommand");

    let (values, _) = plugin_answer(&["re"], "prefix");
    assert_eq!(values, ["refresh"]);

    let (values, _) = plugin_answer(&["refresh", "--wa"], "flag");
    assert_eq!(values, ["--wait"]);

    let (values, directive) = plugin_answer(&["status", "-o", ""], "choice");
    assert_eq!(
        (values, directive.as_str()),
        (vec!["table".to_owned(), "json".to_owned()], ":4")
    );

    // A file argument: the shell completes file names.
    let (values, directive) = plugin_answer(&["fetch", "-f", ""], "file");
    assert_eq!((values.len(), directive.as_str()), (0, ":0"));
}

/// The real kubectl finds the completer on PATH beside the plugin and passes it the words.
#[cfg(feature = "e2e")]
#[test]
fn kubectl_completes_the_plugins_subcommands() {
    let kubectl = testkit::find_bin_dir()
        .expect("provisioned binaries")
        .join("kubectl");
    let dir = linked_as("kubectl-token_rotator", "kubectl");
    std::os::unix::fs::symlink(binary(), dir.join("kubectl_complete-token_rotator")).unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let complete = |words: &[&str]| {
        let out = Command::new(&kubectl)
            .arg("__complete")
            .args(words)
            .env("PATH", &path)
            // No cluster is asked anything; an empty config keeps a developer's away.
            .env("KUBECONFIG", dir.join("no-kubeconfig"))
            .output()
            .expect("kubectl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let plugins = complete(&["token"]);
    assert!(
        plugins.contains("token-rotator"),
        "plugin not listed: {plugins}"
    );
    let subs = complete(&["token-rotator", ""]);
    for sub in SUBCOMMANDS {
        assert!(
            subs.lines().any(|l| l.split('\t').next() == Some(sub)),
            "{sub} not completed by kubectl: {subs}"
        );
    }
    let flags = complete(&["token-rotator", "refresh", "--wa"]);
    assert!(flags.lines().any(|l| l.starts_with("--wait")), "{flags}");
    let _ = std::fs::remove_dir_all(&dir);
}
