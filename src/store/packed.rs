//! How the embedded store keeps a scored contact: an LZ4 block compressed
//! against a fixed dictionary of two scored iClosed contacts.
//!
//! A scored contact is about 2.7 KB of JSON, so a row of its own filled a
//! 4 KiB page: every event cost a page in the write-ahead log and another
//! when the log was copied into the file. Field names and the scored
//! contact's frame repeat from contact to contact, which is what a dictionary
//! captures: bodies shrink to about a third (2,693 → ≈ 950 bytes on the
//! bench payloads), four rows to a page (BENCHMARKS.md, session 7).
//!
//! Layout: one format byte ([`LZ4_DICTIONARY_1`]), the body's length as a
//! little-endian `u32`, the LZ4 block. Rows written before schema 3 hold the
//! body as text and are read as they are. The dictionary is part of the
//! stored format: it never changes; a new one gets a new format byte.

use lz4_flex::block;

/// Two scored contacts (the shared fixtures `contact-created-disqualified`
/// and `contact-created-qualified`, scored by the example rules), one per line.
const DICTIONARY: &[u8] = include_bytes!("body-dictionary.jsonl");

/// The format byte of an LZ4 block against [`DICTIONARY`].
const LZ4_DICTIONARY_1: u8 = 1;

/// LZ4 never expands a block by more than this factor when decompressing
/// (a match of up to 255 + 15 bytes per byte of input, rounded up), which
/// bounds what a corrupt length prefix could make us allocate.
const MAX_EXPANSION: usize = 256;

/// A body as the store keeps it.
pub fn pack(body: &str) -> Vec<u8> {
    let input = body.as_bytes();
    let mut packed = vec![0u8; 5 + block::get_maximum_output_size(input.len())];
    packed[0] = LZ4_DICTIONARY_1;
    packed[1..5].copy_from_slice(&(input.len() as u32).to_le_bytes());
    let written = block::compress_into_with_dict(input, &mut packed[5..], DICTIONARY)
        .expect("the buffer has LZ4's maximum output size");
    packed.truncate(5 + written);
    packed
}

/// The body [`pack`] made, or why the bytes are not one.
pub fn unpack(packed: &[u8]) -> Result<String, String> {
    let (&format, rest) = packed.split_first().ok_or("an empty stored body")?;
    if format != LZ4_DICTIONARY_1 {
        return Err(format!(
            "a stored body in format {format}, which this version does not know (written by a newer leadscore?)"
        ));
    }
    let (length, compressed) = rest.split_first_chunk::<4>().ok_or("a stored body cut short")?;
    let length = u32::from_le_bytes(*length) as usize;
    if length > compressed.len().saturating_mul(MAX_EXPANSION) {
        return Err(format!(
            "a stored body claims {length} bytes from {} compressed ones",
            compressed.len()
        ));
    }
    let bytes = block::decompress_with_dict(compressed, length, DICTIONARY)
        .map_err(|e| format!("a damaged stored body: {e}"))?;
    if bytes.len() != length {
        return Err(format!(
            "a damaged stored body: {} bytes instead of {length}",
            bytes.len()
        ));
    }
    String::from_utf8(bytes).map_err(|e| format!("a stored body that is not UTF-8: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn the_dictionary_never_changes() {
        // Bodies already stored decompress only against these exact bytes.
        assert_eq!(
            hex::encode(Sha256::digest(DICTIONARY)),
            "f037d02d980f4173729d58249dbd66e68514f6bc1f24bd78d89ef8ed913b91bb"
        );
    }

    #[test]
    fn bodies_round_trip_and_shrink() {
        let scored = std::str::from_utf8(DICTIONARY).unwrap().lines().last().unwrap();
        let body = scored.replace("Raya", "Émile").replace("48213", "48214");
        let packed = pack(&body);
        assert!(
            packed.len() * 4 < body.len(),
            "{} → {} bytes",
            body.len(),
            packed.len()
        );
        assert_eq!(unpack(&packed).unwrap(), body);
        for body in ["", "{}", "ünïcödé ✓", &"x".repeat(100_000)] {
            assert_eq!(unpack(&pack(body)).unwrap(), body);
        }
    }

    #[test]
    fn damaged_bodies_are_errors_not_panics() {
        let packed = pack(r#"{"type":"contact.scored","id":"evt_1","contact_id":1}"#);
        assert_eq!(unpack(&[]).unwrap_err(), "an empty stored body");
        assert!(unpack(&[9, 1, 2]).unwrap_err().contains("format 9"));
        assert!(unpack(&packed[..3]).unwrap_err().contains("cut short"));
        let mut huge = packed.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            unpack(&huge).unwrap_err().contains("claims"),
            "{:?}",
            unpack(&huge)
        );
        let mut short = packed.clone();
        short[1..5].copy_from_slice(&3u32.to_le_bytes());
        assert!(unpack(&short).is_err());
        for cut in 5..packed.len() {
            assert!(unpack(&packed[..cut]).is_err(), "cut at {cut}");
        }
    }
}
