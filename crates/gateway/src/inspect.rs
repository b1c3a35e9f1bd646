//! Reading an update before yrs applies it: how deep the types it creates
//! are nested, how many deleted ranges it carries, and whether bytes are
//! left over after it.
//!
//! yrs recurses once per nesting level when it deletes a nested type, so a
//! chain of 20,000 nested maps (180 KB) overflows a thread's stack: the depth
//! must be known *before* yrs integrates the update (the deletion may be in
//! the same update). yrs keeps its decoded blocks private, so [`Shape::read`]
//! walks the encoding with yrs's own public decoder pieces (`Decoder`,
//! `ItemContent::decode`), exactly as `Update::decode` does.
//!
//! Depths: a root type is at depth 0; a type nested in a type of depth d is at
//! d + 1. An item names its parent (a root name or the id of the parent type's
//! item) or, when it has an origin, inherits the parent of that neighbour. A
//! parent or neighbour inside the update is resolved there; one already in the
//! document is resolved through [`Depths`] (the depth of every nested type the
//! document holds, kept by the room) or, for a neighbour, through yrs's
//! `StickyIndex` (which finds an item's parent type). A nested type whose
//! parent the document does not have at all (it would wait as pending) has no
//! known depth and is refused.

use std::collections::HashMap;

use yrs::block::{
    BLOCK_GC_REF_NUMBER, BLOCK_ITEM_ANY_REF_NUMBER, BLOCK_ITEM_DOC_REF_NUMBER,
    BLOCK_ITEM_EMBED_REF_NUMBER, BLOCK_ITEM_FORMAT_REF_NUMBER, BLOCK_SKIP_REF_NUMBER, ClientID,
    HAS_ORIGIN, HAS_PARENT_SUB, HAS_RIGHT_ORIGIN, ItemContent,
};
use yrs::branch::BranchID;
use yrs::encoding::read::{Cursor, Read};
use yrs::updates::decoder::{Decode, Decoder, DecoderV1, DecoderV2};
use yrs::{Assoc, ID, IdSet, ReadTxn, StickyIndex};

/// How an update is encoded (y-protocols always uses v1; HTTP may ask for v2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// lib0 v1 (what y-websocket sends).
    V1,
    /// lib0 v2 (`Y.encodeStateAsUpdateV2`).
    V2,
}

/// Why an update was refused before yrs saw it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    /// The bytes are not an update.
    #[error("not a Yjs update: {0}")]
    Malformed(String),
    /// Bytes follow a complete update (e.g. a v2 update sent as v1).
    #[error("{0} bytes left over after the update (wrong encoding? v2 needs ?format=v2)")]
    TrailingBytes(usize),
    /// A type would be nested deeper than allowed.
    #[error("the update nests types {depth} deep; at most {max} allowed")]
    TooDeep {
        /// The depth the update would reach (or the first one found over the limit).
        depth: u32,
        /// `--max-nesting-depth`.
        max: u32,
    },
    /// A nested type hangs from a type this document does not have.
    #[error("the update nests a type inside one this document does not have")]
    UnknownParent,
}

impl From<yrs::encoding::read::Error> for InspectError {
    fn from(e: yrs::encoding::read::Error) -> Self {
        InspectError::Malformed(e.to_string())
    }
}

/// Deepest nesting of a lib0 `Any` value (JSON-like content) an update may
/// carry: yrs decodes and drops `Any` recursively, so `[[[[...]]]]` two bytes
/// a level would overflow any stack. JSON parsed by serde_json stops at 128.
pub(crate) const MAX_ANY_DEPTH: usize = 128;

/// Skips one lib0 `Any` value without recursion, refusing deeper than
/// [`MAX_ANY_DEPTH`].
fn skip_any<R: Read>(r: &mut R) -> Result<(), InspectError> {
    /// One open array or map: values still to read, and whether each is
    /// preceded by a key.
    struct Level {
        left: u64,
        map: bool,
    }
    let mut open = vec![Level {
        left: 1,
        map: false,
    }];
    while let Some(level) = open.last_mut() {
        if level.left == 0 {
            open.pop();
            continue;
        }
        level.left -= 1;
        if level.map {
            r.read_string()?;
        }
        match r.read_u8()? {
            127 | 126 | 121 | 120 => {}
            125 => {
                r.read_var::<i64>()?;
            }
            124 => {
                r.read_exact(4)?;
            }
            123 | 122 => {
                r.read_exact(8)?;
            }
            119 => {
                r.read_string()?;
            }
            116 => {
                r.read_buf()?;
            }
            tag @ (118 | 117) => {
                let left: u64 = r.read_var()?;
                open.push(Level {
                    left,
                    map: tag == 118,
                });
                if open.len() > MAX_ANY_DEPTH {
                    return Err(InspectError::Malformed(format!(
                        "content nested deeper than {MAX_ANY_DEPTH} levels"
                    )));
                }
            }
            tag => {
                return Err(InspectError::Malformed(format!(
                    "unknown content tag {tag}"
                )));
            }
        }
    }
    Ok(())
}

/// Where an item hangs, as written in the update.
#[derive(Debug, Clone)]
enum Owner {
    /// Directly under a root type.
    Root,
    /// Under the type whose item has this id.
    Type(ID),
    /// Beside this item (its origin): same parent.
    Beside(ID),
}

/// One struct of the update that the bounds care about.
#[derive(Debug)]
struct Struct {
    /// First id the struct covers.
    id: ID,
    /// How many clock values it covers.
    len: u32,
    /// Where it hangs.
    owner: Owner,
    /// It is a nested type (a `Y.Map`, `Y.Array`, `Y.Text`, XML node...).
    is_type: bool,
}

/// What an update holds, as far as the bounds care.
#[derive(Debug)]
pub(crate) struct Shape {
    /// Item structs, per client in clock order.
    structs: HashMap<ClientID, Vec<Struct>>,
    /// Per client, the clock range the update's structs (GC and skips
    /// included) cover: `start..end`.
    spans: HashMap<ClientID, (u32, u32)>,
    /// The update's delete set.
    deletes: IdSet,
}

/// The nesting depth of each nested type of a document, by the id of the
/// type's item (root types are at depth 0 and not listed).
#[derive(Debug, Default, Clone)]
pub(crate) struct Depths {
    /// Depth per nested type.
    by_id: HashMap<ID, u32>,
}

impl Depths {
    /// The depths of the nested types of the document whose full state is
    /// `state` (v1), e.g. at load, and how many item structs it holds.
    pub(crate) fn of_state(state: &[u8]) -> Result<(Depths, usize), InspectError> {
        let shape = Shape::read(state, Encoding::V1)?;
        let mut depths = Depths::default();
        // A stored document is trusted to be resolvable within itself.
        let added = shape.type_depths(&depths, u32::MAX, |_| Some(None))?;
        depths.by_id.extend(added);
        Ok((depths, shape.items()))
    }

    /// Adds the depths of an accepted update's types.
    pub(crate) fn extend(&mut self, added: HashMap<ID, u32>) {
        self.by_id.extend(added);
    }

    /// Adds every depth of `other`.
    pub(crate) fn merge(&mut self, other: Depths) {
        self.by_id.extend(other.by_id);
    }

    /// Nested types known.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }
}

impl Shape {
    /// Reads an encoded update; fails on malformed input and on bytes left
    /// over after a complete update.
    pub(crate) fn read(bytes: &[u8], encoding: Encoding) -> Result<Shape, InspectError> {
        match encoding {
            Encoding::V1 => Shape::read_whole(DecoderV1::new(Cursor::new(bytes)), false),
            Encoding::V2 => Shape::read_whole(DecoderV2::new(Cursor::new(bytes))?, true),
        }
    }

    /// Decodes one update with `decoder` and refuses bytes left after it.
    fn read_whole<D: Decoder>(mut decoder: D, v2: bool) -> Result<Shape, InspectError> {
        let shape = Shape::decode(&mut decoder, v2)?;
        let mut left = 0;
        while decoder.read_u8().is_ok() {
            left += 1;
        }
        if left > 0 {
            return Err(InspectError::TrailingBytes(left));
        }
        Ok(shape)
    }

    /// Mirrors `yrs::Update::decode`, keeping only ids, owners and types.
    fn decode<D: Decoder>(decoder: &mut D, v2: bool) -> Result<Shape, InspectError> {
        let clients: u32 = decoder.read_var()?;
        let mut structs: HashMap<ClientID, Vec<Struct>> = HashMap::new();
        let mut spans: HashMap<ClientID, (u32, u32)> = HashMap::new();
        for _ in 0..clients {
            let count: u32 = decoder.read_var()?;
            let client = decoder.read_client()?;
            let mut clock: u32 = decoder.read_var()?;
            let start = clock;
            let list = structs.entry(client).or_default();
            for _ in 0..count {
                let info = decoder.read_info()?;
                match info {
                    BLOCK_SKIP_REF_NUMBER => {
                        let len: u32 = decoder.read_var()?;
                        clock = clock.saturating_add(len);
                    }
                    BLOCK_GC_REF_NUMBER => {
                        let len = decoder.read_len()?;
                        clock = clock.saturating_add(len);
                    }
                    info => {
                        let origin = (info & HAS_ORIGIN != 0)
                            .then(|| decoder.read_left_id())
                            .transpose()?;
                        let right = (info & HAS_RIGHT_ORIGIN != 0)
                            .then(|| decoder.read_right_id())
                            .transpose()?;
                        let owner = match (origin, right) {
                            (Some(o), _) | (None, Some(o)) => Owner::Beside(o),
                            (None, None) => {
                                if decoder.read_parent_info()? {
                                    decoder.read_string()?;
                                    Owner::Root
                                } else {
                                    Owner::Type(decoder.read_left_id()?)
                                }
                            }
                        };
                        if origin.is_none() && right.is_none() && info & HAS_PARENT_SUB != 0 {
                            decoder.read_string()?;
                        }
                        // lib0 `Any` content is skipped here, not decoded by
                        // yrs (which recurses without a bound).
                        let (len, is_type) = match info & 0b1111 {
                            BLOCK_ITEM_ANY_REF_NUMBER => {
                                let len = decoder.read_len()?;
                                for _ in 0..len {
                                    skip_any(decoder)?;
                                }
                                (len, false)
                            }
                            BLOCK_ITEM_DOC_REF_NUMBER => {
                                decoder.read_string()?;
                                skip_any(decoder)?;
                                (1, false)
                            }
                            BLOCK_ITEM_EMBED_REF_NUMBER if v2 => {
                                skip_any(decoder)?;
                                (1, false)
                            }
                            BLOCK_ITEM_FORMAT_REF_NUMBER if v2 => {
                                decoder.read_key()?;
                                skip_any(decoder)?;
                                (1, false)
                            }
                            _ => {
                                let content = ItemContent::decode(decoder, info)?;
                                (content.len_utf16(), matches!(content, ItemContent::Type(_)))
                            }
                        };
                        if len == 0 {
                            continue;
                        }
                        list.push(Struct {
                            id: ID::new(client, clock),
                            len,
                            owner,
                            is_type,
                        });
                        clock = clock.saturating_add(len);
                    }
                }
            }
            spans.insert(client, (start, clock));
        }
        let deletes = IdSet::decode(decoder)?;
        Ok(Shape {
            structs,
            spans,
            deletes,
        })
    }

    /// Deleted ranges the update carries for content neither the document
    /// (with `state`) nor the update itself holds: yrs keeps them pending
    /// and retries them on every later apply. (A client's SyncStep2 deleting
    /// content it sends in the same update is not counted.)
    pub(crate) fn unknown_delete_ranges(&self, state: &yrs::StateVector) -> usize {
        self.deletes
            .iter()
            .map(|(client, ranges)| {
                let mut known = state.get(client);
                if let Some(&(start, end)) = self.spans.get(client)
                    && start <= known
                {
                    known = known.max(end);
                }
                ranges.iter().filter(|r| r.end > known).count()
            })
            .sum()
    }

    /// Whether the update carries a struct the document with `state` lacks.
    pub(crate) fn adds_to(&self, state: &yrs::StateVector) -> bool {
        self.structs.iter().any(|(client, list)| {
            list.last()
                .is_some_and(|s| s.id.clock + s.len > state.get(client))
        })
    }

    /// Whether the update deletes anything.
    pub(crate) fn deletes_anything(&self) -> bool {
        self.deletes.iter().next().is_some()
    }

    /// Whether every range the update deletes is within `deleted`.
    pub(crate) fn deletes_within(&self, deleted: &IdSet) -> bool {
        let have: HashMap<ClientID, Vec<std::ops::Range<u32>>> = deleted
            .iter()
            .map(|(c, r)| (*c, r.iter().cloned().collect()))
            .collect();
        self.deletes.iter().all(|(client, ranges)| {
            let have = have.get(client).map_or(&[][..], Vec::as_slice);
            ranges.iter().all(|r| covered(r, have))
        })
    }

    /// How many item structs the update carries (each costs the document
    /// a few hundred bytes of memory, however small its encoding).
    pub(crate) fn items(&self) -> usize {
        self.structs.values().map(Vec::len).sum()
    }

    /// Whether the update carries anything at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.structs.values().all(Vec::is_empty) && self.deletes.iter().next().is_none()
    }

    /// The struct of this update that covers `id`.
    fn find(&self, id: &ID) -> Option<&Struct> {
        let list = self.structs.get(&id.client)?;
        let i = list.partition_point(|s| s.id.clock + s.len <= id.clock);
        list.get(i).filter(|s| s.id.clock <= id.clock)
    }

    /// The depth of each nested type the update creates, given the document's
    /// `known` depths and `beside_in_doc` (the parent type of a document item,
    /// `Some(None)` for a root, `None` if the document lacks the item). Fails
    /// on the first type deeper than `max` or with an unknown parent.
    pub(crate) fn type_depths(
        &self,
        known: &Depths,
        max: u32,
        beside_in_doc: impl Fn(&ID) -> Option<Option<ID>>,
    ) -> Result<HashMap<ID, u32>, InspectError> {
        let mut added: HashMap<ID, u32> = HashMap::new();
        for s in self.structs.values().flatten().filter(|s| s.is_type) {
            // Walk up until a type of known depth (or a root), then unwind.
            let mut chain: Vec<ID> = vec![s.id];
            let base = loop {
                let Some(&top) = chain.last() else { break 0 };
                if let Some(&d) = added.get(&top).or_else(|| known.by_id.get(&top)) {
                    chain.pop();
                    break d;
                }
                let parent = match self.find(&top) {
                    Some(item) => self.parent_of(item, &beside_in_doc)?,
                    // A type the document holds but `known` lacks: a stored
                    // type under a GC'd parent; yrs drops what hangs from it.
                    None if beside_in_doc(&top).is_some() => None,
                    None => return Err(InspectError::UnknownParent),
                };
                match parent {
                    None => break 0,
                    Some(p) => {
                        chain.push(p);
                        if chain.len() as u64 > u64::from(max) + 1 {
                            return Err(InspectError::TooDeep {
                                depth: chain.len() as u32,
                                max,
                            });
                        }
                    }
                }
            };
            let mut depth = base;
            while let Some(id) = chain.pop() {
                depth += 1;
                if depth > max {
                    return Err(InspectError::TooDeep { depth, max });
                }
                added.insert(id, depth);
            }
        }
        Ok(added)
    }

    /// The id of the type `item` hangs from (`None`: a root), following
    /// origins through this update and into the document.
    fn parent_of(
        &self,
        item: &Struct,
        beside_in_doc: &impl Fn(&ID) -> Option<Option<ID>>,
    ) -> Result<Option<ID>, InspectError> {
        let mut current = item;
        // Each step moves to another struct; a cycle is bounded by the count.
        for _ in 0..=self.structs.values().map(Vec::len).sum::<usize>() {
            match &current.owner {
                Owner::Root => return Ok(None),
                Owner::Type(p) => return Ok(Some(*p)),
                Owner::Beside(o) => match self.find(o) {
                    Some(next) => current = next,
                    None => return beside_in_doc(o).ok_or(InspectError::UnknownParent),
                },
            }
        }
        Err(InspectError::UnknownParent)
    }
}

/// Whether `have` (ranges of one client) covers all of `r`.
fn covered(r: &std::ops::Range<u32>, have: &[std::ops::Range<u32>]) -> bool {
    let mut at = r.start;
    while at < r.end {
        match have.iter().find(|h| h.start <= at && at < h.end) {
            Some(h) => at = h.end,
            None => return false,
        }
    }
    true
}

/// The parent type of the document item `id`: `Some(None)` for a root type,
/// `Some(Some(type item id))` for a nested one, `None` if the document does
/// not have the item (or it was garbage-collected).
pub(crate) fn parent_in_doc<T: ReadTxn>(txn: &T, id: &ID) -> Option<Option<ID>> {
    if txn.state_vector().get(&id.client) <= id.clock {
        return None;
    }
    match StickyIndex::from_id(*id, Assoc::After).get_offset(txn) {
        Some(offset) => match offset.branch.id() {
            BranchID::Root(_) => Some(None),
            BranchID::Nested(p) => Some(Some(p)),
        },
        // GC'd: yrs integrates what hangs beside it as GC too.
        None => Some(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::encoder::Encode;
    use yrs::{Doc, Map, MapPrelim, MapRef, StateVector, Transact};

    /// An update creating `n` maps nested in each other.
    fn nested_maps(n: usize) -> Vec<u8> {
        super::tests_support::nested_maps_then_delete(n).0
    }

    fn depth_of(update: &[u8], max: u32) -> Result<u32, InspectError> {
        let shape = Shape::read(update, Encoding::V1)?;
        let added = shape.type_depths(&Depths::default(), max, |_| None)?;
        Ok(added.values().copied().max().unwrap_or(0))
    }

    #[test]
    fn depth_of_nested_maps_is_counted() {
        assert_eq!(depth_of(&nested_maps(5), 1000), Ok(5));
        assert_eq!(
            depth_of(&nested_maps(30), 20),
            Err(InspectError::TooDeep { depth: 21, max: 20 })
        );
    }

    #[test]
    fn depth_continues_across_updates_through_known_depths() {
        let doc = Doc::with_client_id(7);
        let root = doc.get_or_insert_map("m");
        let mut map: MapRef = root.insert(&mut doc.transact_mut(), "k", MapPrelim::default());
        for _ in 1..10 {
            map = map.insert(&mut doc.transact_mut(), "k", MapPrelim::default());
        }
        let state = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let (known, _) = Depths::of_state(&state).unwrap();
        assert_eq!(known.len(), 10);
        let before = doc.transact().state_vector();
        let _: MapRef = map.insert(&mut doc.transact_mut(), "k", MapPrelim::default());
        let next = doc.transact().encode_diff_v1(&before);
        let shape = Shape::read(&next, Encoding::V1).unwrap();
        let added = shape.type_depths(&known, 1000, |_| None).unwrap();
        assert_eq!(added.values().copied().collect::<Vec<_>>(), [11]);
        assert_eq!(
            shape.type_depths(&known, 10, |_| None),
            Err(InspectError::TooDeep { depth: 11, max: 10 })
        );
    }

    #[test]
    fn bytes_after_an_update_are_refused() {
        let mut bytes = nested_maps(1);
        bytes.extend_from_slice(&[1, 2, 3]);
        assert_eq!(
            Shape::read(&bytes, Encoding::V1).unwrap_err(),
            InspectError::TrailingBytes(3)
        );
    }

    #[test]
    fn a_v2_update_is_read_as_v2_and_refused_as_v1() {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("content");
        yrs::Text::insert(&text, &mut doc.transact_mut(), 0, "hello");
        let v2 = doc
            .transact()
            .encode_state_as_update_v2(&StateVector::default());
        assert!(Shape::read(&v2, Encoding::V2).is_ok());
        assert!(Shape::read(&v2, Encoding::V1).is_err());
        let v1 = yrs::Update::decode_v2(&v2).unwrap().encode_v1();
        assert!(Shape::read(&v1, Encoding::V1).is_ok());
    }
}

#[cfg(test)]
mod stack_use {
    use super::tests_support::nested_maps_then_delete;

    /// Measures the stack yrs needs to delete N nested maps: runs the apply
    /// on threads with shrinking stacks (each failure aborts only a child
    /// process, so this is run by hand: `cargo test -p tandem-gateway
    /// stack_needed -- --ignored --nocapture`, with `STACK_TEST_KIB` and
    /// `STACK_TEST_DEPTH` set).
    #[test]
    #[ignore]
    fn stack_needed() {
        let kib: usize = std::env::var("STACK_TEST_KIB").map_or(8192, |v| v.parse().unwrap());
        let depth: usize = std::env::var("STACK_TEST_DEPTH").map_or(1000, |v| v.parse().unwrap());
        let t = std::thread::Builder::new()
            .stack_size(kib * 1024)
            .spawn(move || {
                let (create, delete) = nested_maps_then_delete(depth);
                let doc = yrs::Doc::new();
                let mut txn = yrs::Transact::transact_mut(&doc);
                txn.apply_update(yrs::updates::decoder::Decode::decode_v1(&create).unwrap())
                    .unwrap();
                txn.apply_update(yrs::updates::decoder::Decode::decode_v1(&delete).unwrap())
                    .unwrap();
            })
            .unwrap();
        t.join().unwrap();
        println!("depth {depth} fits in {kib} KiB");
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use yrs::{Doc, Map, MapPrelim, MapRef, ReadTxn, StateVector, Transact};

    /// An update creating `n` maps nested in each other under root map `m`,
    /// and one deleting the outermost.
    pub(crate) fn nested_maps_then_delete(n: usize) -> (Vec<u8>, Vec<u8>) {
        let doc = Doc::with_client_id(7);
        let root = doc.get_or_insert_map("m");
        {
            let mut txn = doc.transact_mut();
            let mut map: MapRef = root.insert(&mut txn, "k", MapPrelim::default());
            for _ in 1..n {
                map = map.insert(&mut txn, "k", MapPrelim::default());
            }
        }
        let create = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let before = doc.transact().state_vector();
        root.remove(&mut doc.transact_mut(), "k");
        let delete = doc.transact().encode_diff_v1(&before);
        (create, delete)
    }
}
