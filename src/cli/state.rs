//! `--state etcd://...` (which store every command opens) and `medic state migrate`, which
//! copies operations between the sled state directory and etcd
//! (`crate::store::migrate_operation` does the copying and checking).

use serde_json::json;

use super::args::{Cli, StateCommand};
use super::{print_json, CliError, Ctx};
use crate::store::etcd::{select, EtcdConfig};
use crate::store::{Access, Store};

/// The etcd store named by `url` with the TLS, key file and TTL options of `cli`.
fn etcd_config(cli: &Cli, url: &str) -> Result<EtcdConfig, CliError> {
    let tls = cli.state_ca.is_some() || cli.state_cert.is_some();
    let mut config = EtcdConfig::parse(url, tls).map_err(|e| CliError::usage(e.to_string()))?;
    config.ca = cli.state_ca.clone();
    config.cert = cli.state_cert.clone();
    config.key = cli.state_key.clone();
    config.key_file = cli.state_key_file.clone();
    config.lease_ttl = std::time::Duration::from_secs(cli.state_lease_ttl);
    Ok(config)
}

/// Makes every store of this process the etcd store of `--state`, if given.
pub(super) fn select_backend(cli: &Cli) -> Result<(), CliError> {
    if let Some(url) = &cli.state_url {
        select(etcd_config(cli, url)?);
    }
    Ok(())
}

pub(super) fn state_command(ctx: &Ctx, command: &StateCommand) -> Result<i32, CliError> {
    match command {
        StateCommand::Migrate { to, operation } => migrate(ctx, to, operation.as_deref()),
    }
}

/// `medic state migrate --to TARGET [--operation ID]`.
fn migrate(ctx: &Ctx, to: &str, only: Option<&str>) -> Result<i32, CliError> {
    let cli = &ctx.cli;
    let target_etcd = match to.starts_with("etcd://") {
        true => Some(etcd_config(cli, to)?),
        false => None,
    };
    let target_dir = std::path::PathBuf::from(to);
    let mut source = ctx.store(Access::Read)?;
    let ids: Vec<String> = match only {
        Some(id) => vec![source.operation(id)?.id],
        None => source.operations()?.into_iter().map(|o| o.id).collect(),
    };
    let mut target = Store::open_on(&target_dir, Access::Create, target_etcd.as_ref())?;
    let mut copied = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        if !ctx.json() {
            eprintln!("copying operation {id} ({} of {})…", n + 1, ids.len());
        }
        let counts = crate::store::migrate_operation(&mut source, &mut target, id)?;
        if !ctx.json() {
            println!(
                "copied {id}: {} phase records, {} history entries, {} log lines, {} secret values; plan sha256:{} verified",
                counts.records,
                counts.history,
                counts.log_lines,
                counts.secrets,
                &counts.fingerprint[..16]
            );
        }
        copied.push(json!({
            "operation": id,
            "records": counts.records,
            "history": counts.history,
            "log_lines": counts.log_lines,
            "secrets": counts.secrets,
            "fingerprint": counts.fingerprint,
        }));
    }
    source.release();
    target.release();
    if ctx.json() {
        print_json(&json!({ "to": to, "copied": copied }));
    } else if ids.is_empty() {
        println!("no operations to copy");
    }
    Ok(0)
}
