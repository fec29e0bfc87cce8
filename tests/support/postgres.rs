//! A throwaway PostgreSQL cluster on a free loopback port (Debian's
//! `postgresql` package), for the fleet tests: `initdb` into a scratch
//! folder, `pg_ctl start`/`stop`, `pg_dump`. As root, the server runs as
//! the `postgres` user (PostgreSQL refuses root). Stopped on drop.

use std::path::PathBuf;
use std::process::Command;

use super::free_port;

/// A running cluster.
pub struct Postgres {
    /// Data folder (also its Unix socket folder).
    pub data: PathBuf,
    pub port: u16,
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub url: String,
    bin: PathBuf,
    as_root: bool,
}

fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("/usr/lib/postgresql: is Debian's postgresql package installed?")
        .map(|e| e.unwrap().path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no PostgreSQL server binaries under /usr/lib/postgresql")
}

impl Postgres {
    /// `initdb` (trust authentication, no fsync) and start.
    pub fn start(name: &str) -> Self {
        let as_root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
        let port = free_port();
        // Outside the build folder, so the postgres user can reach it.
        let data = std::env::temp_dir().join(format!("spicetap-pg-{name}-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap();
        let me =
            Self { data, port, url: format!("postgres://postgres@127.0.0.1:{port}/postgres"), bin: bin_dir(), as_root };
        if as_root {
            assert!(Command::new("chown").args(["postgres:postgres"]).arg(&me.data).status().unwrap().success());
        }
        let out = me.run(
            "initdb",
            &["-D", me.data.to_str().unwrap(), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
        );
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        me.up();
        me
    }

    fn run(&self, tool: &str, args: &[&str]) -> std::process::Output {
        let path = self.bin.join(tool);
        let mut cmd = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        cmd.args(args).current_dir(&self.data).output().unwrap_or_else(|e| panic!("{tool}: {e}"))
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.data.display()
        );
        let log = self.data.join("server.log");
        let out = self.run(
            "pg_ctl",
            &["-D", self.data.to_str().unwrap(), "-o", &opts, "-l", log.to_str().unwrap(), "-w", "-t", "30", "start"],
        );
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Stops the server (fast: open connections are closed).
    pub fn down(&self) {
        let out = self.run("pg_ctl", &["-D", self.data.to_str().unwrap(), "-m", "fast", "-w", "stop"]);
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A plain-text dump of the whole database.
    pub fn dump(&self) -> String {
        let out = self.run("pg_dump", &["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "postgres"]);
        assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs one SQL statement with psql; its rows, `|`-separated.
    pub fn sql(&self, statement: &str) -> String {
        let out = self
            .run("psql", &["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-At", "-c", statement]);
        assert!(out.status.success(), "psql {statement}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.run("pg_ctl", &["-D", self.data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
        if std::env::var_os("SPICETAP_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.data);
        }
    }
}
