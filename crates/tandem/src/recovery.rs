//! The recovery runbook as subcommands: `tandem check` (read everything,
//! report, change nothing), `tandem salvage --to NEWDIR` (copy every
//! readable document into a fresh directory, list what was skipped) and
//! `tandem restore ARCHIVE` (load a `GET /api/backup` archive into a new
//! data directory).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tandem_store::{Manifest, Store, StoreConfig};
use yrs::{ReadTxn, StateVector, Transact};

use crate::store_args::StoreArgs;

/// `tandem check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    store: StoreArgs,
}

/// `tandem salvage --to NEWDIR`.
#[derive(Debug, clap::Args)]
pub struct SalvageArgs {
    /// New data directory to copy every readable document into (must not
    /// hold documents yet).
    #[arg(long)]
    to: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
}

/// `tandem restore ARCHIVE --data-dir DIR`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// A backup archive from `GET /api/backup`.
    archive: PathBuf,
    /// Data directory to restore into (must not hold documents yet).
    #[command(flatten)]
    store: StoreArgs,
}

/// Opens `dir` for recovery: never compared with its manifest, never written.
fn open_damaged(args: &StoreArgs) -> anyhow::Result<Store> {
    let mut config = StoreConfig::new(&args.data_dir);
    config.cache_bytes = args
        .store_cache_mb
        .map_or(config.cache_bytes, |mb| mb << 20);
    Store::open_for_recovery(config)
        .with_context(|| format!("opening {} for recovery", args.data_dir.display()))
}

/// Fails unless `dir` holds no documents (so nothing is merged by mistake).
fn open_fresh(args: &StoreArgs, dir: &Path) -> anyhow::Result<Store> {
    let mut args = args.clone();
    args.data_dir = dir.to_path_buf();
    let store = args.open()?;
    if !store.list_page("", None, 1)?.docs.is_empty() {
        bail!(
            "{} already holds documents; give a new, empty directory",
            dir.display()
        );
    }
    Ok(store)
}

/// Reads every document and record and reports; exit status 1 on damage.
pub fn check(args: CheckArgs) -> anyhow::Result<()> {
    let dir = &args.store.data_dir;
    let manifest = Manifest::read(dir);
    let store = open_damaged(&args.store)?;
    let ids = store.stored_ids().context("scanning the data directory")?;
    let (mut readable, mut damaged) = (0u64, 0u64);
    for doc in &ids {
        match store.load_lossy(doc) {
            Ok((_, bad)) if bad.is_empty() => readable += 1,
            Ok((_, bad)) => {
                damaged += 1;
                for err in bad {
                    println!("damaged: {err}");
                }
            }
            Err(err) => {
                damaged += 1;
                println!("unreadable: {err}");
            }
        }
        if store.info(doc)?.is_none() {
            println!("damaged: document '{doc}' has records but no metadata record");
        }
    }
    let found = ids.len() as u64;
    let mut missing = false;
    match manifest {
        Ok(Some(m)) => {
            println!(
                "manifest: {} documents at checkpoint {} (format {})",
                m.documents, m.commit, m.format
            );
            if found < m.documents {
                missing = true;
                println!(
                    "missing: {} of the {} documents the manifest records",
                    m.documents - found,
                    m.documents
                );
            }
        }
        Ok(None) => println!("manifest: none (a directory from before format 3)"),
        Err(err) => {
            missing = true;
            println!("manifest: {err}");
        }
    }
    println!("{found} documents found, {readable} fully readable, {damaged} damaged");
    if damaged > 0 || missing {
        println!(
            "recover with: tandem salvage --data-dir {} --to NEWDIR (nothing here was changed)",
            dir.display()
        );
        std::process::exit(1);
    }
    Ok(())
}

/// Copies every readable document into a fresh directory.
pub fn salvage(args: SalvageArgs) -> anyhow::Result<()> {
    let from = open_damaged(&args.store)?;
    let to = open_fresh(&args.store, &args.to)?;
    let ids = from.stored_ids().context("scanning the data directory")?;
    let (mut copied, mut partial, mut skipped) = (0u64, 0u64, 0u64);
    for doc in &ids {
        match from.load_lossy(doc) {
            Ok((ydoc, bad)) => {
                let state = ydoc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                to.import(doc, &state)
                    .with_context(|| format!("writing '{doc}' into {}", args.to.display()))?;
                copied += 1;
                if !bad.is_empty() {
                    partial += 1;
                    for err in bad {
                        eprintln!("skipped record: {err}");
                    }
                }
            }
            Err(err) => {
                skipped += 1;
                eprintln!("skipped document: {err}");
            }
        }
    }
    to.flush()?;
    println!(
        "salvaged {copied} documents into {} ({partial} without some unreadable records, \
         {skipped} unreadable documents skipped); {} was not changed",
        args.to.display(),
        args.store.data_dir.display()
    );
    Ok(())
}

/// Loads a backup archive into a new data directory.
pub fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let dir = args.store.data_dir.clone();
    let store = open_fresh(&args.store, &dir)?;
    let manifest = tandem_store::backup::restore_backup(&store, &args.archive)
        .with_context(|| format!("restoring {}", args.archive.display()))?;
    println!(
        "restored {} documents from {} into {}",
        manifest.documents.len(),
        args.archive.display(),
        dir.display()
    );
    for (doc, why) in &manifest.skipped {
        eprintln!("not in the backup (unreadable when it was taken): {doc}: {why}");
    }
    Ok(())
}
