//! [`Blob`]: bytes that decode as a slice of the payload, without a copy.

use std::cell::RefCell;
use std::fmt;
use std::ops::Deref;

use base64::Engine as _;
use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

thread_local! {
    /// The payload being decoded on this thread, set by [`with_source`].
    static SOURCE: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Run `decode` with `payload` as the buffer that [`Blob`] fields borrow
/// from: a byte string the deserializer hands out as a slice of `payload`
/// becomes a [`Bytes`] sharing `payload`'s buffer instead of a copy. The
/// built-in codecs call it; a codec of one's own does the same around its
/// deserializer. Nested calls are fine (the outer payload is restored).
pub fn with_source<R>(payload: &Bytes, decode: impl FnOnce() -> R) -> R {
    struct Restore(Option<Bytes>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            SOURCE.with(|s| *s.borrow_mut() = previous);
        }
    }
    let previous = SOURCE.with(|s| s.borrow_mut().replace(payload.clone()));
    let _restore = Restore(previous);
    decode()
}

/// `slice` as a [`Bytes`] sharing the buffer of the payload being decoded,
/// if it lies within it.
fn share(slice: &[u8]) -> Option<Bytes> {
    SOURCE.with(|s| {
        let source = s.borrow();
        let source = source.as_ref()?;
        let start = source.as_ptr() as usize;
        let at = slice.as_ptr() as usize;
        let inside = at >= start && at + slice.len() <= start + source.len();
        (inside && !slice.is_empty()).then(|| source.slice_ref(slice))
    })
}

/// Bytes inside a typed payload: a MessagePack `bin` (CBOR byte string),
/// and in JSON a base64 string, as the Python `msight_core` writes bytes
/// in `to_json()`.
///
/// Decoded with [`MsgPack`](crate::codec::MsgPack) (any deserializer that
/// lends out slices of its input, inside [`with_source`]), a `Blob` is a
/// slice of the received payload: a 1 MiB JPEG inside an image message is
/// not copied. Otherwise it owns a copy. Either way it is a [`Bytes`]:
/// cheap to clone, and [`Blob::into_bytes`] hands it over without a copy.
///
/// Its `Debug` shows the length, not the content (an image would fill a log).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Blob(Bytes);

impl Blob {
    /// A blob of `bytes`.
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        Blob(bytes.into())
    }

    /// A blob of `slice`, read by a deserializer: a slice of the payload
    /// being decoded (see [`with_source`]) when it lies within it, else a
    /// copy. For `Deserialize` impls of one's own that meet bytes in
    /// `visit_bytes` / `visit_borrowed_bytes`.
    pub fn from_decoded(slice: &[u8]) -> Self {
        Blob(share(slice).unwrap_or_else(|| Bytes::copy_from_slice(slice)))
    }

    /// The bytes, as a shared [`Bytes`].
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The bytes, without a copy.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Whether this blob lies inside `payload`'s buffer (it was decoded
    /// without a copy from it).
    pub fn is_slice_of(&self, payload: &[u8]) -> bool {
        let start = payload.as_ptr() as usize;
        let at = self.0.as_ptr() as usize;
        !self.0.is_empty() && at >= start && at + self.0.len() <= start + payload.len()
    }
}

impl Deref for Blob {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Blob {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Bytes> for Blob {
    fn from(b: Bytes) -> Self {
        Blob(b)
    }
}

impl From<Vec<u8>> for Blob {
    fn from(v: Vec<u8>) -> Self {
        Blob(v.into())
    }
}

impl From<&'static [u8]> for Blob {
    fn from(s: &'static [u8]) -> Self {
        Blob(Bytes::from_static(s))
    }
}

impl<const N: usize> From<&'static [u8; N]> for Blob {
    fn from(s: &'static [u8; N]) -> Self {
        Blob(Bytes::from_static(s))
    }
}

impl From<Blob> for Bytes {
    fn from(b: Blob) -> Self {
        b.0
    }
}

impl PartialEq<[u8]> for Blob {
    fn eq(&self, other: &[u8]) -> bool {
        self.0 == other
    }
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            d.deserialize_str(BlobVisitor { text: true })
        } else {
            // `byte_buf`, not `bytes`: ciborium limits `bytes` to its
            // scratch buffer; MessagePack lends a slice either way.
            d.deserialize_byte_buf(BlobVisitor { text: false })
        }
    }
}

/// Reads a blob: bytes (shared with the payload where possible), or in a
/// text format a base64 string.
struct BlobVisitor {
    text: bool,
}

impl<'de> Visitor<'de> for BlobVisitor {
    type Value = Blob;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.text {
            f.write_str("a base64 string")
        } else {
            f.write_str("bytes")
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Blob, E> {
        if !self.text {
            return Err(E::invalid_type(de::Unexpected::Str(v), &self));
        }
        base64::engine::general_purpose::STANDARD
            .decode(v)
            .map(Blob::from)
            .map_err(|e| E::custom(format_args!("invalid base64: {e}")))
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Blob, E> {
        self.visit_bytes(v)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Blob, E> {
        Ok(Blob::from_decoded(v))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
        Ok(Blob(v.into()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Blob, A::Error> {
        // A sequence of byte values (how some formats write bytes). The
        // hint comes from the payload: trust it only a little.
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            v.push(b);
        }
        Ok(Blob(v.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_inside_the_source_are_shared_and_others_copied() {
        let payload = Bytes::from(vec![1u8, 2, 3, 4, 5]);
        let inside = &payload[1..4];
        let outside = vec![2u8, 3, 4];
        let (a, b) = with_source(&payload, || {
            (
                BlobVisitor { text: false }
                    .visit_borrowed_bytes::<de::value::Error>(inside)
                    .unwrap(),
                BlobVisitor { text: false }
                    .visit_bytes::<de::value::Error>(&outside)
                    .unwrap(),
            )
        });
        assert_eq!(&a[..], &[2, 3, 4]);
        assert!(a.is_slice_of(&payload));
        assert_eq!(a, b);
        assert!(!b.is_slice_of(&payload));
        // Outside `with_source` nothing is shared.
        let c = BlobVisitor { text: false }
            .visit_bytes::<de::value::Error>(inside)
            .unwrap();
        assert!(!c.is_slice_of(&payload));
    }

    #[test]
    fn nested_sources_are_restored() {
        let outer = Bytes::from(vec![9u8; 8]);
        let inner = Bytes::from(vec![7u8; 8]);
        with_source(&outer, || {
            with_source(&inner, || assert!(share(&inner[..2]).is_some()));
            assert!(share(&inner[..2]).is_none());
            assert!(share(&outer[..2]).is_some());
        });
        assert!(share(&outer[..2]).is_none());
    }

    #[test]
    fn text_formats_use_base64_and_debug_hides_the_content() {
        let b = Blob::from(&b"\xff\xd8abc"[..]);
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(json, "\"/9hhYmM=\"");
        assert_eq!(serde_json::from_str::<Blob>(&json).unwrap(), b);
        let e = serde_json::from_str::<Blob>("\"not base64!\"").unwrap_err();
        assert!(e.to_string().contains("base64"), "{e}");
        assert_eq!(format!("{b:?}"), "Blob(5 bytes)");
    }
}
