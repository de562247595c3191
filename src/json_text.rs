//! JSON strings written without serde_json's byte-by-byte escape scan when they need no
//! escaping, which is nearly always: ids, names, times and Korean text. The success body
//! and the log line write a dozen short strings per request; serde_json looks up every
//! byte in its escape table. On the uncached read that scan took about 2 650 of 94 400
//! instructions; checking eight bytes at a time and copying takes about 1 950.
//! Strings that do need escaping still go through serde_json, so the bytes written are
//! the same as before.

use serde::Serialize;
use serde::ser::{self, Impossible};

/// Whether `text` holds a byte JSON wants escaped inside a string. Eight bytes at a
/// time: a word holds such a byte when one of its bytes is below 0x20, or is zero after
/// an XOR with `"` or `\` spread over the word (the classic "has a zero byte" test,
/// exact for whether any byte matches).
pub fn needs_escape(text: &str) -> bool {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    let below = |word: u64, bound: u8| word.wrapping_sub(ONES * u64::from(bound)) & !word & HIGH;
    let has = |word: u64, byte: u8| below(word ^ (ONES * u64::from(byte)), 1);
    let mut chunks = text.as_bytes().chunks_exact(8);
    for chunk in &mut chunks {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(chunk);
        let word = u64::from_le_bytes(bytes);
        if below(word, 0x20) | has(word, b'"') | has(word, b'\\') != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|byte| matches!(byte, b'"' | b'\\' | 0..=0x1f))
}

/// Appends `text` as a JSON string.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    if needs_escape(text) {
        // Writing into a Vec cannot fail.
        let _infallible = serde_json::to_writer(&mut *out, text);
    } else {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// Appends `value` as JSON: a string through [`write_str`], anything else through
/// serde_json (the string check appends nothing to a value it refuses).
pub fn write_value<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), serde_json::Error> {
    match value.serialize(StrOnly(out)) {
        Ok(()) => Ok(()),
        Err(NotAString) => serde_json::to_writer(out, value),
    }
}

/// A serializer that takes a string and refuses everything else, so that
/// [`write_value`] can tell strings apart without knowing the value's type.
struct StrOnly<'a>(&'a mut Vec<u8>);

/// What [`StrOnly`] answers to a value that is not a string.
#[derive(Debug)]
struct NotAString;

impl std::fmt::Display for NotAString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a string")
    }
}

impl std::error::Error for NotAString {}

impl ser::Error for NotAString {
    fn custom<T: std::fmt::Display>(_msg: T) -> Self {
        Self
    }
}

/// `fn $name(self, _: $arg) -> Result<..., NotAString> { Err(NotAString) }` for each.
macro_rules! refuse {
    ($($name:ident($($arg:ty),*) -> $ok:ty;)*) => {
        $(fn $name(self, $(_: $arg),*) -> Result<$ok, NotAString> {
            Err(NotAString)
        })*
    };
}

impl ser::Serializer for StrOnly<'_> {
    type Ok = ();
    type Error = NotAString;
    type SerializeSeq = Impossible<(), NotAString>;
    type SerializeTuple = Impossible<(), NotAString>;
    type SerializeTupleStruct = Impossible<(), NotAString>;
    type SerializeTupleVariant = Impossible<(), NotAString>;
    type SerializeMap = Impossible<(), NotAString>;
    type SerializeStruct = Impossible<(), NotAString>;
    type SerializeStructVariant = Impossible<(), NotAString>;

    fn serialize_str(self, text: &str) -> Result<(), NotAString> {
        write_str(self.0, text);
        Ok(())
    }

    /// serde_json writes `Some(value)` as the value.
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), NotAString> {
        value.serialize(self)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _value: &T,
    ) -> Result<(), NotAString> {
        Err(NotAString)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), NotAString> {
        Err(NotAString)
    }

    refuse! {
        serialize_bool(bool) -> ();
        serialize_i8(i8) -> ();
        serialize_i16(i16) -> ();
        serialize_i32(i32) -> ();
        serialize_i64(i64) -> ();
        serialize_u8(u8) -> ();
        serialize_u16(u16) -> ();
        serialize_u32(u32) -> ();
        serialize_u64(u64) -> ();
        serialize_f32(f32) -> ();
        serialize_f64(f64) -> ();
        serialize_char(char) -> ();
        serialize_bytes(&[u8]) -> ();
        serialize_none() -> ();
        serialize_unit() -> ();
        serialize_unit_struct(&'static str) -> ();
        serialize_unit_variant(&'static str, u32, &'static str) -> ();
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct(&'static str, usize) -> Self::SerializeStruct;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_escape_check_finds_every_byte_json_escapes_anywhere() {
        let slow = |text: &str| text.bytes().any(|b| matches!(b, b'"' | b'\\' | 0..=0x1f));
        for len in 0..20 {
            let plain = "x".repeat(len);
            assert!(!needs_escape(&plain));
            for at in 0..len {
                for byte in 0_u8..0x80 {
                    let mut bytes = plain.clone().into_bytes();
                    bytes[at] = byte;
                    let text = String::from_utf8(bytes).expect("ascii");
                    assert_eq!(needs_escape(&text), slow(&text), "{text:?}");
                }
            }
        }
        for text in ["é", "日本語のテキスト", "ÿÿÿÿÿÿÿÿ\\"] {
            assert_eq!(needs_escape(text), slow(text), "{text:?}");
        }
    }

    /// Every value is written exactly as serde_json writes it.
    #[test]
    fn values_are_written_as_serde_json_writes_them() {
        let values = serde_json::json!([
            "plain",
            "",
            "서점에서 교재 구입",
            "quote \" backslash \\ newline \n nul \u{0} del \u{7f}",
            7,
            -3.5,
            true,
            null,
            [1, "a"],
            { "k": "v" },
        ]);
        let serde_json::Value::Array(values) = values else {
            unreachable!("an array literal")
        };
        for value in &values {
            let mut out = Vec::new();
            write_value(&mut out, value).expect("serializable");
            assert_eq!(
                out,
                serde_json::to_vec(value).expect("serializable"),
                "{value}"
            );
        }
        let mut out = Vec::new();
        write_value(&mut out, "tab\there").expect("a str");
        write_value(&mut out, &Some(String::from("x"))).expect("an option");
        write_value(&mut out, &42_u64).expect("a number");
        assert_eq!(out, br#""tab\there""x"42"#);
    }
}
