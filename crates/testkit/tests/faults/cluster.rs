//! A private PostgreSQL cluster for one test, so that it can be stopped and started without
//! touching the machine's shared server: `initdb` into a temporary directory, `pg_ctl` on a free
//! port with the socket in that directory. PostgreSQL refuses to run as root, so as root the
//! commands run as the `postgres` user (`runuser`), in a directory it owns.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    run_as_postgres: bool,
    port: u16,
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb` and `pg_ctl`.
fn binaries() -> Option<PathBuf> {
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, bin)| bin)
}

async fn output(command: &mut Command) -> Result<String, String> {
    let output = command
        .output()
        .await
        .map_err(|error| format!("cannot run {command:?}: {error}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(format!("{command:?} failed ({}): {text}", output.status))
    }
}

async fn is_root() -> bool {
    output(Command::new("id").arg("-u"))
        .await
        .is_ok_and(|uid| uid.trim() == "0")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

impl Cluster {
    /// Initializes and starts a cluster; `Err` says why that is impossible here.
    pub async fn start() -> Result<Cluster, String> {
        let bin = binaries().ok_or("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")?;
        let run_as_postgres = is_root().await;
        let dir = tempfile::Builder::new()
            .prefix("caremesh-faults-pg")
            .tempdir()
            .map_err(|error| format!("temporary directory: {error}"))?;
        if run_as_postgres {
            output(Command::new("chown").arg("postgres:postgres").arg(dir.path()))
                .await
                .map_err(|error| format!("running as root, and the postgres user cannot own the data: {error}"))?;
        }
        let cluster = Cluster {
            dir,
            bin,
            run_as_postgres,
            port: free_port(),
        };
        cluster
            .run(
                "initdb",
                &["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"],
                true,
            )
            .await?;
        cluster.start_server().await?;
        Ok(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Runs one of the server binaries (as `postgres` when we are root), with the data directory
    /// appended when `with_data`.
    async fn run(&self, program: &str, args: &[&str], with_data: bool) -> Result<String, String> {
        let path = self.bin.join(program);
        let mut command = if self.run_as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        };
        command.args(args);
        if with_data {
            command.arg(self.data());
        }
        command.current_dir(self.dir.path());
        output(&mut command).await
    }

    pub async fn start_server(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.log();
        let data = self.data();
        self.run(
            "pg_ctl",
            &[
                "-w",
                "-t",
                "30",
                "-l",
                path_str(&log),
                "-o",
                &options,
                "-D",
                path_str(&data),
                "start",
            ],
            false,
        )
        .await
        .map(drop)
    }

    /// Stops the server the way an operator's fast shutdown does: open sessions are terminated.
    pub async fn stop_server(&self) -> Result<(), String> {
        let data = self.data();
        self.run(
            "pg_ctl",
            &["-w", "-t", "30", "-m", "fast", "-D", path_str(&data), "stop"],
            false,
        )
        .await
        .map(drop)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's log (for a failure message).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Best effort, synchronously: never leave a server running behind the test.
        let path = self.bin.join("pg_ctl");
        let data = self.data();
        let mut command = if self.run_as_postgres {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
        } else {
            std::process::Command::new(&path)
        };
        command
            .args(["-m", "immediate", "-D"])
            .arg(&data)
            .arg("stop")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let _ = command.status();
        std::thread::sleep(Duration::from_millis(50));
    }
}
