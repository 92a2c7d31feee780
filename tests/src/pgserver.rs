//! A PostgreSQL server of a test's own, so that a test can stop and start the database for real
//! without touching the server every other test shares. It needs the PostgreSQL server programs
//! (`/usr/lib/postgresql/<version>/bin`, as Debian installs them) and root, to run them as the
//! `postgres` user; [`PrivateServer::start`] says `None` without them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct PrivateServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

/// The newest installed PostgreSQL's programs.
fn programs() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Runs `program` of `bin` as the `postgres` user; whether it succeeded.
fn run(bin: &Path, program: &str, args: &[&str]) -> bool {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join(program))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

impl PrivateServer {
    /// Initializes a cluster in a temporary directory and starts it on an unused port.
    pub fn start() -> Option<Self> {
        let bin = programs()?;
        let dir = tempfile::tempdir().ok()?;
        let owned = Command::new("chown").arg("postgres:postgres").arg(dir.path()).status();
        if !owned.is_ok_and(|status| status.success()) {
            return None;
        }
        let data = dir.path().join("data");
        let data = data.to_str()?;
        let initialized =
            run(&bin, "initdb", &["-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
        assert!(initialized, "initdb of a private PostgreSQL failed");
        let server = PrivateServer { dir, bin, port: crate::unused_port() };
        server.resume();
        Some(server)
    }

    /// Where rosterd finds it.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Stops the server: every connection is closed, new ones are refused.
    pub fn stop(&self) {
        assert!(run(&self.bin, "pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]), "pg_ctl stop");
    }

    /// Starts it (again), and waits until it accepts connections.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        assert!(
            run(&self.bin, "pg_ctl", &["-D", &self.data(), "-o", &options, "-l", &log, "-w", "start"]),
            "pg_ctl start"
        );
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        run(&self.bin, "pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
    }
}
