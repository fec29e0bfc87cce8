//! The `spicetap` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use spicetap::protocol::ChannelType;
use spicetap::proxy::{Proxy, ProxyConfig};

/// A transparent SPICE recording proxy.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Forward SPICE clients to a server, optionally recording every channel.
    Proxy(ProxyArgs),
}

#[derive(Debug, Args)]
struct ProxyArgs {
    /// Address to accept SPICE clients on; port 0 picks a free port. Repeatable.
    #[arg(long, default_value = "127.0.0.1:5900")]
    listen: Vec<SocketAddr>,
    /// The SPICE server (QEMU's `-spice port=`), HOST:PORT.
    #[arg(long)]
    upstream: String,
    /// Record each session into DIR/<UTC start>-<session id>/: a pcap per
    /// channel and session.json.
    #[arg(long, value_name = "DIR")]
    capture: Option<PathBuf>,
    /// Write `host:port` of the first listener to FILE once it accepts.
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
    /// Log every message header of these channel types (names such as
    /// `main,display,inputs` or numbers), at debug level.
    #[arg(long, value_name = "CHANNELS", value_delimiter = ',')]
    debug_channels: Vec<String>,
    /// Most channel connections open at once.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Most MiB of traffic waiting for a session's capture writer; past it
    /// that capture stops (recorded in session.json) and forwarding goes on.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    capture_queue_mib: usize,
}

fn parse_channel(name: &str) -> Result<ChannelType> {
    if let Ok(n) = name.parse::<u8>() {
        return Ok(ChannelType(n));
    }
    (1..=11).map(ChannelType).find(|c| c.name() == name).with_context(|| format!("unknown channel type {name:?}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Proxy(args) => proxy(args).await,
    }
}

async fn proxy(args: ProxyArgs) -> Result<()> {
    let debug_channels = args.debug_channels.iter().map(|c| parse_channel(c)).collect::<Result<Vec<_>>>()?;
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if !debug_channels.is_empty() {
        filter = filter.add_directive("spicetap::messages=debug".parse()?);
    }
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    if args.max_connections == 0 {
        bail!("--max-connections must be at least 1");
    }

    let config = ProxyConfig {
        listen: args.listen,
        upstream: args.upstream,
        capture_dir: args.capture,
        ready_file: args.ready_file,
        debug_channels,
        max_connections: args.max_connections,
        capture_queue_bytes: args.capture_queue_mib.saturating_mul(1024 * 1024),
    };
    let proxy = Proxy::bind(config).await.context("starting the proxy")?;
    proxy.run(stop_signal()).await.context("running the proxy")?;
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}
