//! Operator subcommands over a data directory: list, export (with `--lossy`
//! recovery of damaged documents), import, compact.

use std::io::Write;
use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use anyhow::{Context, bail};
use tandem_store::listing::MAX_PAGE;
use tandem_store::{DocId, StoreError};
use yrs::types::ToJson;
use yrs::{GetString, ReadTxn, StateVector, Transact};

use tandem_gateway::TEXT_ROOT;

use crate::store_args::StoreArgs;

/// `tandem list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only documents whose id starts with this.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Start after this id (the cursor a previous page printed).
    #[arg(long)]
    after: Option<String>,
    /// Print one page of at most this many documents (1-1000) and the
    /// cursor of the next one; default: every document, page by page.
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    store: StoreArgs,
}

/// Export formats.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    /// The root Y.Text `content` (what the web editor shows).
    Text,
    /// Every root type as JSON.
    Json,
    /// The full state as one binary Yjs v1 update.
    Update,
}

/// `tandem export DOC`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = RECOVERY_HELP)]
pub struct ExportArgs {
    /// Document id.
    doc: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: ExportFormat,
    /// Write here instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Recover a damaged document: skip unreadable log records (listed on
    /// stderr; nothing is deleted) and export the rest.
    ///
    /// The damaged records stay in the data directory untouched, so a plain
    /// `export` keeps failing on them.
    #[arg(long)]
    lossy: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// Shown at the end of `tandem export --help`.
const RECOVERY_HELP: &str = "\
Recovering a damaged document:
  A document with a corrupt log record cannot be loaded, and plain `export`
  fails naming the record. `--lossy` exports what is valid instead and lists
  each skipped record on stderr. Nothing is ever deleted. To carry on with the
  recovered content, export it as an update and import it into a new document:

    tandem export DOC --lossy --format update -o DOC.recovered
    tandem import NEWDOC DOC.recovered";

/// `tandem import DOC FILE`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Document id.
    doc: String,
    /// File holding a binary Yjs v1 update (e.g. from `tandem export --format update`).
    file: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
}

/// `tandem compact [DOC]`.
#[derive(Debug, clap::Args)]
pub struct CompactArgs {
    /// Document id (default: every document).
    doc: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

/// Prints one line per stored document, reading one page at a time (the
/// store's metadata records: O(page) memory and work per page).
pub fn list(args: ListArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
    let mut after = args.after.map(DocId::new).transpose()?;
    let page_size = args.limit.unwrap_or(MAX_PAGE);
    if !(1..=MAX_PAGE).contains(&page_size) {
        bail!("--limit must be 1..={MAX_PAGE}");
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<40} {:>12} {:>10} {:>8} {:>15}",
        "DOC", "BYTES", "UPDATES", "LOG", "MODIFIED(unix)"
    )?;
    loop {
        let page = store
            .list_page(&args.prefix, after.as_ref(), page_size)
            .context("listing documents")?;
        for d in &page.docs {
            let modified = d
                .last_modified
                .duration_since(UNIX_EPOCH)
                .map(|t| t.as_secs())
                .unwrap_or(0);
            writeln!(
                out,
                "{:<40} {:>12} {:>10} {:>8} {:>15}",
                d.id.as_str(),
                d.size_bytes,
                d.update_count,
                d.log_len,
                modified
            )?;
        }
        match page.next {
            Some(next) if args.limit.is_some() => {
                eprintln!("more: tandem list --after {next}");
                return Ok(());
            }
            Some(next) => after = Some(next),
            None => return Ok(()),
        }
    }
}

/// Writes one document in the chosen format (`--lossy`: what is readable).
pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    let doc = DocId::new(args.doc)?;
    let store = args.store.open()?;
    if store.info(&doc)?.is_none() {
        bail!(
            "no document '{}' in {}",
            doc.as_str(),
            args.store.data_dir.display()
        );
    }
    let ydoc = if args.lossy {
        let (ydoc, skipped) = store.load_lossy(&doc)?;
        for err in &skipped {
            eprintln!("skipped: {err}");
        }
        if !skipped.is_empty() {
            eprintln!(
                "exported '{}' without {} unreadable record(s); they are still stored",
                doc.as_str(),
                skipped.len()
            );
        }
        ydoc
    } else {
        match store.load(&doc) {
            Ok(ydoc) => ydoc,
            Err(err @ StoreError::CorruptRecord { .. }) => bail!(
                "{err}\nnothing was exported; `tandem export {} --lossy` exports the readable \
                 rest (nothing is deleted)",
                doc.as_str()
            ),
            Err(err) => return Err(err.into()),
        }
    };
    let bytes = match args.format {
        ExportFormat::Update => ydoc
            .transact()
            .encode_state_as_update_v1(&StateVector::default()),
        ExportFormat::Text => {
            let text = ydoc.get_or_insert_text(TEXT_ROOT);
            let s = text.get_string(&ydoc.transact());
            s.into_bytes()
        }
        ExportFormat::Json => {
            ydoc.get_or_insert_text(TEXT_ROOT);
            let mut s = String::new();
            ydoc.to_json(&ydoc.transact()).to_json(&mut s);
            s.push('\n');
            s.into_bytes()
        }
    };
    match args.output {
        Some(path) => {
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?
        }
        None => std::io::stdout().write_all(&bytes)?,
    }
    Ok(())
}

/// Merges an update file into a document.
pub fn import(args: ImportArgs) -> anyhow::Result<()> {
    let doc = DocId::new(args.doc)?;
    let update =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let store = args.store.open()?;
    store
        .import(&doc, &update)
        .with_context(|| format!("importing into '{}'", doc.as_str()))?;
    store.flush()?;
    eprintln!("imported {} bytes into '{}'", update.len(), doc.as_str());
    Ok(())
}

/// Compacts one document or all of them.
pub fn compact(args: CompactArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
    let docs = match args.doc {
        Some(d) => vec![DocId::new(d)?],
        None => store.list()?.into_iter().map(|d| d.id).collect(),
    };
    for doc in docs {
        let stats = store
            .compact(&doc)
            .with_context(|| format!("compacting '{}'", doc.as_str()))?;
        println!(
            "{}: merged {} updates, snapshot {} bytes",
            doc.as_str(),
            stats.merged_updates,
            stats.snapshot_bytes
        );
    }
    store.flush()?;
    Ok(())
}
