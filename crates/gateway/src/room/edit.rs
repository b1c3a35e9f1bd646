//! An HTTP edit (`PUT`/`POST` under `/api/docs`): applied, stored durably and
//! broadcast to every peer, exactly like a peer's update but one at a time.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::error;
use yrs::updates::decoder::Decode;
use yrs::{ReadTxn, Text, Transact};

use super::{Room, Target, load};
use crate::close::CloseCode;
use crate::mailbox::{Edit, EditError};
use crate::protocol;

impl Room {
    /// Applies, stores and broadcasts an HTTP edit.
    pub(super) async fn edit(&mut self, edit: Edit) -> Result<(), EditError> {
        let update = match edit {
            Edit::Update(raw) => {
                let decoded = catch_unwind(AssertUnwindSafe(|| yrs::Update::decode_v1(&raw)))
                    .map_err(|_| EditError::Malformed("decoder panicked".into()))?
                    .map_err(|e| EditError::Malformed(e.to_string()))?;
                let applied = catch_unwind(AssertUnwindSafe(|| {
                    self.doc.transact_mut().apply_update(decoded)
                }));
                if !matches!(applied, Ok(Ok(()))) {
                    self.doc = load(&self.shared.store, &self.doc_id)
                        .await
                        .map_err(EditError::Store)?;
                    return Err(EditError::Malformed("yrs rejected the update".into()));
                }
                raw.to_vec()
            }
            Edit::ReplaceText(new) => {
                let before = self.doc.transact().state_vector();
                let text = self.doc.get_or_insert_text(crate::api::TEXT_ROOT);
                {
                    let mut txn = self.doc.transact_mut();
                    let len = text.len(&txn);
                    text.remove_range(&mut txn, 0, len);
                    text.insert(&mut txn, 0, &new);
                }
                self.doc.transact().encode_diff_v1(&before)
            }
        };
        let stored = match self.shared.store.append(&self.doc_id, &update) {
            Ok(ticket) => ticket.durable().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            error!(error = %e, "store failed to persist an HTTP edit");
            self.failed = true;
            self.close_all(CloseCode::Internal);
            return Err(EditError::Store(e.to_string()));
        }
        self.shared
            .metrics
            .updates_applied
            .fetch_add(1, Ordering::Relaxed);
        let mut outbox = VecDeque::new();
        outbox.push_back((Target::All, protocol::encode_update(&update)));
        self.dispatch(outbox);
        if self.peers.is_empty() {
            self.empty_since = Some(Instant::now());
        }
        self.compact_in_background();
        Ok(())
    }
}
