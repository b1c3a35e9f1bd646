//! The data-dir format check at open, and the upgrade of older formats.
//!
//! Format 3 adds checksummed records and the per-document metadata records
//! (see [`crate::records`]). Opening a format-1 or format-2 directory writes
//! a metadata record for every document (rebuilt from its records, which
//! stay as they are) and then marks the directory as format 3, so a release
//! that reads only older formats refuses it instead of misreading it.

use crate::doc_state::scan_records;
use crate::listing::record_doc_ids;
use crate::manifest::Holdings;
use crate::{StoreError, records};

/// Checks (or, for a new directory, writes) the data-dir format version,
/// upgrading older formats; returns the number of documents.
pub(crate) fn check_format(db: &sled::Db, held: &Holdings) -> Result<u64, StoreError> {
    let current = records::DATA_FORMAT_VERSION;
    match held.format {
        Some(found) if found == 0 || found > current => Err(StoreError::UnsupportedFormat {
            found,
            supported: current,
        }),
        Some(found) if found == current => Ok(held.documents),
        Some(found) => {
            let mut documents = 0;
            for doc in record_doc_ids(db)? {
                let state = scan_records(db, &doc)?;
                if state.exists() {
                    db.insert(records::doc_meta_key(&doc), state.encode())?;
                    documents += 1;
                }
            }
            db.insert(records::META_KEY, &current.to_be_bytes())?;
            tracing::info!(
                from = found,
                to = current,
                documents,
                "data directory format upgraded"
            );
            Ok(documents)
        }
        None => {
            db.insert(records::META_KEY, &current.to_be_bytes())?;
            Ok(held.documents)
        }
    }
}
