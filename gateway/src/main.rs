//! `preau-gateway`: parses the configuration, sets up logs and metrics, and serves.

use clap::Parser;
use preau_gateway::config::{Cli, Command};
use preau_gateway::{Gateway, run};
use preau_ops::tls::{Listener, Reloading};
use std::io::Write;

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    preau_ops::logging::init(cli.config.log_json, "PREAU_LOG", "info");
    if let Err(e) = command(cli).await {
        preau_ops::logging::fail(e);
    }
}

async fn command(cli: Cli) -> anyhow::Result<()> {
    let cfg = cli.config;
    preau_gateway::pii::show_pii(cfg.log_pii);
    cfg.validate()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let tls = match cfg.tls().map_err(anyhow::Error::msg)? {
                Some(files) => Some(Reloading::start(files).map_err(anyhow::Error::msg)?),
                None => None,
            };
            let prom = preau_gateway::metrics::install()?;
            let g = Gateway::start(cfg.clone()).await?;
            let tcp = preau_gateway::http::bind(cfg.listen, cfg.listen_backlog)
                .map_err(|e| anyhow::anyhow!("--listen {}: {e}", cfg.listen))?;
            let addr = tcp.local_addr()?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            let listener = Listener::new(tcp, tls)?;
            // Tests and scripts read this line to find the port when listening on :0.
            println!("preau-gateway listening on {scheme}://{addr} (dev mode: {})", cfg.dev_mode());
            std::io::stdout().flush()?;
            tracing::info!(%addr, dev = cfg.dev_mode(), data = %cfg.data_dir.display(), "serving");
            if cfg.dev_mode() {
                tracing::warn!(
                    %addr,
                    "DEVELOPMENT MODE: demo school, /dev/token gives a token for any user to anyone who asks; \
                     never expose this node"
                );
            }
            run(listener, g, Some(prom), shutdown_signal()).await
        }
        Command::Import { file } => {
            let text = std::fs::read_to_string(&file)?;
            let doc = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: not a directory document: {e}", file.display()))?;
            let g = Gateway::start_tool(cfg).await?;
            let schools = g
                .import_as(doc, "preau-gateway import")
                .await
                .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
            println!("imported schools: {}", schools.join(", "));
            Ok(())
        }
        Command::Migrate => {
            if let Some(po) = cfg.postgres() {
                let was = preau_store::PgStore::migrate(&po.url).await?;
                println!(
                    "postgresql database is at schema version {} (was {was})",
                    preau_store::postgres::SCHEMA_VERSION
                );
                return Ok(());
            }
            let so = cfg
                .scylla()
                .ok_or_else(|| anyhow::anyhow!("migrate needs --postgres-url or --scylla-nodes (SQLite needs none)"))?;
            migrate(&so).await
        }
        Command::Purge { dry_run } => {
            let g = Gateway::start_tool(cfg.clone()).await?;
            // One holder for every run of the command on this host: a run killed halfway
            // is resumed by the next at once, not after its lease expires.
            let holder = cfg.node_id.clone().unwrap_or_else(|| {
                let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
                format!("purge-{host}")
            });
            let r =
                g.purge_departed(&holder, dry_run).await.map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
            if r.lease_held_elsewhere {
                eprintln!("another node is purging now (its lease lasts at most 10 minutes); try again later");
            }
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        Command::Erase { user, school, remove_posts, dry_run } => {
            let g = Gateway::start_tool(cfg).await?;
            let school = match school.or_else(|| g.dir().user(&user).map(|u| u.school.clone())) {
                Some(s) => s,
                None => anyhow::bail!("`{user}` is not in the directory: say which school with --school"),
            };
            let r = g
                .erase_person(&school, &user, "preau-gateway erase", remove_posts, dry_run)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        Command::Export { user, school } => {
            let g = Gateway::start_tool(cfg).await?;
            let school = match school.or_else(|| g.dir().user(&user).map(|u| u.school.clone())) {
                Some(s) => s,
                None => anyhow::bail!("`{user}` is not in the directory: say which school with --school"),
            };
            let mut rx = g.export_person(&school, &user, "preau-gateway export");
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = rx.recv().await {
                out.write_all(&chunk?)?;
            }
            writeln!(out)?;
            Ok(())
        }
        Command::Backup { to } => {
            anyhow::ensure!(
                cfg.postgres().is_none() && cfg.scylla().is_none(),
                "backup copies the SQLite store; back PostgreSQL up with pg_dump or its replicas, ScyllaDB with nodetool snapshot"
            );
            let db = cfg.data_dir.join("preau.db");
            anyhow::ensure!(db.exists(), "{}: no store there (is --data-dir right?)", db.display());
            let bytes = preau_store::sqlite::backup(&db, &to).map_err(anyhow::Error::msg)?;
            println!("backup of {} written to {} ({bytes} bytes)", db.display(), to.display());
            Ok(())
        }
        Command::Restore { from } => {
            let db = cfg.data_dir.join("preau.db");
            let bytes = preau_store::sqlite::restore(&from, &db).map_err(anyhow::Error::msg)?;
            println!("{} restored as {} ({bytes} bytes)", from.display(), db.display());
            Ok(())
        }
        Command::Token { user } => {
            anyhow::ensure!(cfg.dev_mode(), "tokens are issued in development mode only");
            let g = Gateway::start(cfg).await?;
            let t = g.dev_token(&user).ok_or_else(|| anyhow::anyhow!("no user `{user}` in the directory"))?;
            println!("{t}");
            Ok(())
        }
    }
}

#[cfg(feature = "scylla")]
async fn migrate(so: &preau_store::ScyllaOptions) -> anyhow::Result<()> {
    preau_store::scylla::ScyllaStore::migrate(so).await?;
    println!("keyspace {} is at schema version {}", so.keyspace, preau_store::scylla::SCHEMA_VERSION);
    Ok(())
}

#[cfg(not(feature = "scylla"))]
async fn migrate(_: &preau_store::ScyllaOptions) -> anyhow::Result<()> {
    anyhow::bail!("this preau-gateway was built without ScyllaDB support: rebuild with `--features scylla`")
}
