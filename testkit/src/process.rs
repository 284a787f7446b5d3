//! Child processes that cannot outlive the test process, and temp dirs that do not either.
//!
//! * Children get `PR_SET_PDEATHSIG(SIGKILL)`. That signal fires when the *thread* that forked
//!   the child exits, and test runtimes start and stop threads all the time, so every child is
//!   forked by one dedicated thread that lives as long as the process.
//! * Each control plane registers its temp dir and children here; an `atexit` hook kills what is
//!   left and removes the dirs, because statics (the shared instance) are never dropped.
//! * Temp dirs live under `$TMPDIR/token-rotator-cp/<pid>-<n>`, so a run can remove those of
//!   earlier runs whose process is gone (killed by a signal, where no hook runs).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Lines of a log quoted in startup errors.
const LOG_TAIL_LINES: usize = 40;

struct SpawnRequest {
    command: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

fn spawner() -> &'static mpsc::Sender<SpawnRequest> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                // The sender lives in a static, so this loop (and the thread) never ends.
                for mut request in rx {
                    let _ = request.reply.send(request.command.spawn());
                }
            })
            .expect("cannot start the testkit spawner thread");
        tx
    })
}

/// How often a stopping child is checked for having exited.
const STOP_POLL: Duration = Duration::from_millis(20);

/// A running child process whose output goes to a log file.
///
/// It remembers how it was started, so [`respawn`](Self::respawn) can start it again exactly so.
/// Dropping a child that is still running kills it (SIGKILL); [`stop`](Self::stop) it first to
/// give it a chance to exit cleanly.
pub(crate) struct Process {
    pub name: &'static str,
    pub log: PathBuf,
    program: PathBuf,
    args: Vec<String>,
    /// The environment at the first spawn, so a respawn sees the same one.
    env: Vec<(OsString, OsString)>,
    child: Child,
    owner: u64,
}

impl Process {
    /// Starts `program` with `args`, stdout and stderr appended to `log`, killed if we die.
    pub fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        log: PathBuf,
        owner: &TempDir,
    ) -> Result<Self> {
        Self::start(
            name,
            program.to_owned(),
            args.to_vec(),
            std::env::vars_os().collect(),
            log,
            owner.id,
        )
    }

    /// The process id (e.g. to read its CPU time from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts the same program again, with the same arguments, environment and log file (which
    /// it appends to). Stop this one first if they must not run at the same time.
    pub fn respawn(&self) -> Result<Self> {
        Self::start(
            self.name,
            self.program.clone(),
            self.args.clone(),
            self.env.clone(),
            self.log.clone(),
            self.owner,
        )
    }

    fn start(
        name: &'static str,
        program: PathBuf,
        args: Vec<String>,
        env: Vec<(OsString, OsString)>,
        log: PathBuf,
        owner: u64,
    ) -> Result<Self> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(Error::io("open log file", &log))?;
        let err = out.try_clone().map_err(Error::io("open log file", &log))?;
        let mut command = Command::new(&program);
        command
            .args(&args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: the closure only makes async-signal-safe syscalls (getpid, prctl, getppid,
        // setpgid) between fork and exec.
        let parent = unsafe { libc::getpid() };
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect; then nobody would kill us.
                if libc::getppid() != parent {
                    return Err(io::Error::other("parent exited during spawn"));
                }
                // Own process group: a terminal's Ctrl-C reaches only the parent, which then
                // stops the components in order.
                if libc::setpgid(0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (reply, response) = mpsc::channel();
        spawner()
            .send(SpawnRequest { command, reply })
            .map_err(|_| Error::Spawn {
                name,
                source: io::Error::other("the spawner thread is gone"),
            })?;
        let child = response
            .recv()
            .map_err(|_| Error::Spawn {
                name,
                source: io::Error::other("the spawner thread is gone"),
            })?
            .map_err(|source| Error::Spawn { name, source })?;
        track_pid(owner, child.id());
        Ok(Self {
            name,
            log,
            program,
            args,
            env,
            child,
            owner,
        })
    }

    /// Fails with the log's tail if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                untrack_pid(self.owner, self.child.id());
                Err(self.exited(status.to_string()))
            }
            Err(e) => Err(self.exited(format!("cannot wait for it: {e}"))),
        }
    }

    fn exited(&self, status: String) -> Error {
        Error::ProcessExited {
            name: self.name,
            status,
            log: self.log.clone(),
            tail: log_tail(&self.log),
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + grace;
        self.terminate();
        loop {
            if let Some(status) = self.poll_stop(deadline) {
                break status;
            }
            thread::sleep(STOP_POLL);
        }
    }

    /// [`stop`](Self::stop) without blocking the async runtime's thread while it waits.
    pub async fn stop_async(&mut self, grace: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + grace;
        self.terminate();
        loop {
            if let Some(status) = self.poll_stop(deadline) {
                break status;
            }
            tokio::time::sleep(STOP_POLL).await;
        }
    }

    /// SIGTERM, unless it has exited already.
    fn terminate(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            // SAFETY: plain syscall on our own, not yet reaped, child.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        }
    }

    /// `Some(status)` once it has exited or, past `deadline`, been killed; `None` to wait on.
    fn poll_stop(&mut self, deadline: Instant) -> Option<Option<ExitStatus>> {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => Some(status),
            Ok(None) if Instant::now() < deadline => return None,
            _ => {
                let _ = self.child.kill();
                self.child.wait().ok()
            }
        };
        untrack_pid(self.owner, self.child.id());
        Some(status)
    }
}

impl Drop for Process {
    /// Only a safety net (e.g. a restart whose future was dropped midway): everything that
    /// owns processes stops them first, after which this does nothing.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            untrack_pid(self.owner, self.child.id());
        }
    }
}

/// The last lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(e) => format!("(cannot read the log: {e})"),
    }
}

struct Tracked {
    dir: PathBuf,
    pids: Vec<u32>,
}

fn tracked() -> MutexGuard<'static, BTreeMap<u64, Tracked>> {
    static TRACKED: Mutex<BTreeMap<u64, Tracked>> = Mutex::new(BTreeMap::new());
    // A panic while holding the lock leaves consistent data; keep cleaning up.
    TRACKED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn track_pid(id: u64, pid: u32) {
    if let Some(entry) = tracked().get_mut(&id) {
        entry.pids.push(pid);
    }
}

fn untrack_pid(id: u64, pid: u32) {
    if let Some(entry) = tracked().get_mut(&id) {
        entry.pids.retain(|p| *p != pid);
    }
}

extern "C" fn cleanup_at_exit() {
    let entries = std::mem::take(&mut *tracked());
    for entry in entries.into_values() {
        for pid in &entry.pids {
            // SAFETY: plain syscalls on children we started and have not reaped.
            unsafe {
                libc::kill(*pid as libc::pid_t, libc::SIGKILL);
                libc::waitpid(*pid as libc::pid_t, std::ptr::null_mut(), 0);
            }
        }
        let _ = fs::remove_dir_all(&entry.dir);
    }
}

/// A per-instance temp dir, removed (after its children are gone) on drop or at exit.
pub(crate) struct TempDir {
    pub path: PathBuf,
    id: u64,
}

impl TempDir {
    pub fn create() -> Result<Self> {
        static ATEXIT: Once = Once::new();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        ATEXIT.call_once(|| {
            // SAFETY: registers a plain extern "C" fn; failure only loses the exit-time cleanup.
            unsafe { libc::atexit(cleanup_at_exit) };
        });

        let root = std::env::temp_dir().join("token-rotator-cp");
        fs::create_dir_all(&root).map_err(Error::io("create", &root))?;
        remove_stale(&root);
        let pid = std::process::id();
        loop {
            let id = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = root.join(format!("{pid}-{id}"));
            match fs::create_dir(&path) {
                Ok(()) => {
                    tracked().insert(
                        id,
                        Tracked {
                            dir: path.clone(),
                            pids: Vec::new(),
                        },
                    );
                    return Ok(Self { path, id });
                }
                // Left by an earlier process that had our pid.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io("create", path)(e)),
            }
        }
    }

    /// Writes a file readable only by us (it may hold keys or tokens).
    pub fn write_private(&self, name: &str, contents: &str) -> Result<PathBuf> {
        write_private(&self.path.join(name), contents)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        tracked().remove(&self.id);
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Writes `contents` to `path` with mode 0600, atomically (readers never see a partial file).
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let mut file: File = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(Error::io("create", &tmp))?;
    file.write_all(contents.as_bytes())
        .map_err(Error::io("write", &tmp))?;
    fs::rename(&tmp, path).map_err(Error::io("rename into place", path))?;
    Ok(path.to_owned())
}

fn remove_stale(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != me && !process_alive(pid) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_dir_is_removed_on_drop() {
        let dir = TempDir::create().unwrap();
        let file = dir.write_private("secret", "x").unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "x");
        let path = dir.path.clone();
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn stale_dirs_of_dead_processes_are_removed() {
        let root = std::env::temp_dir().join("token-rotator-cp");
        fs::create_dir_all(&root).unwrap();
        // pid_max is at most 2^22, so this pid cannot be alive.
        let stale = root.join("9999999-0");
        fs::create_dir_all(&stale).unwrap();
        let dir = TempDir::create().unwrap();
        assert!(!stale.exists());
        assert!(dir.path.exists());
    }

    #[test]
    fn children_are_stopped_and_logged() {
        let dir = TempDir::create().unwrap();
        let log = dir.path.join("sleep.log");
        let mut p = Process::spawn(
            "sh",
            Path::new("/bin/sh"),
            &["-c".into(), "echo started; exec sleep 30".into()],
            log.clone(),
            &dir,
        )
        .unwrap();
        // Wait for the output so SIGTERM hits `sleep`, not the shell before it echoed.
        let deadline = Instant::now() + Duration::from_secs(10);
        while log_tail(&log) != "started" {
            p.check_running().unwrap();
            assert!(Instant::now() < deadline, "no output from the child");
            thread::sleep(Duration::from_millis(10));
        }
        let status = p.stop(Duration::from_secs(5)).unwrap();
        assert!(!status.success());

        let mut quick = Process::spawn(
            "false",
            Path::new("/bin/sh"),
            &["-c".into(), "echo boom; exit 3".into()],
            dir.path.join("false.log"),
            &dir,
        )
        .unwrap();
        quick.child.wait().unwrap();
        let err = quick.check_running().unwrap_err().to_string();
        assert!(
            err.contains("boom") && err.contains("exit status: 3"),
            "{err}"
        );
    }

    /// Waits until the log holds `text`, failing if the child exits first.
    fn wait_for_log(p: &mut Process, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while log_tail(&p.log) != text {
            p.check_running().unwrap();
            assert!(Instant::now() < deadline, "the log never became {text:?}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[tokio::test]
    async fn respawn_repeats_the_command_and_appends_to_the_log() {
        let dir = TempDir::create().unwrap();
        let log = dir.path.join("echo.log");
        let mut first = Process::spawn(
            "sh",
            Path::new("/bin/sh"),
            &[
                "-c".into(),
                "echo \"run $1\"; exec sleep 30".into(),
                "sh".into(),
                "a".into(),
            ],
            log.clone(),
            &dir,
        )
        .unwrap();
        wait_for_log(&mut first, "run a");
        let status = first.stop_async(Duration::from_secs(5)).await.unwrap();
        assert!(!status.success());
        // Stopped, not failed: nothing of it is left to kill at exit.
        assert!(tracked()[&dir.id].pids.is_empty());

        let mut second = first.respawn().unwrap();
        wait_for_log(&mut second, "run a\nrun a");
        assert_eq!(tracked()[&dir.id].pids, [second.child.id()]);
        let pid = second.child.id();
        drop(second);
        // Dropped while running: killed and reaped.
        assert!(!process_alive(pid));
        assert!(tracked()[&dir.id].pids.is_empty());
    }
}
