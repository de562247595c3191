//! The field names an input type binds, read once from its serde derive, so the table
//! check can prove that a cache key names every field a request can vary (a field left
//! out of the key would let two different requests share one entry).

use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};

/// The wire names of `T`'s fields (after `rename`), or `None` when `T` does not
/// deserialize as a struct.
pub fn field_names<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    let mut found = None;
    // The probe always stops the derive with an error once it has seen the fields.
    let _stopped = T::deserialize(Probe { found: &mut found });
    found
}

/// A deserializer that only records the field list a derived struct asks for.
struct Probe<'a> {
    found: &'a mut Option<&'static [&'static str]>,
}

#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field probe")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Stop
    }
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        *self.found = Some(fields);
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[serde(default)]
    #[allow(dead_code)]
    #[derive(Default)]
    struct Page {
        start: u32,
        #[serde(rename = "type")]
        kind: String,
    }

    #[derive(serde::Deserialize)]
    struct Empty {}

    #[test]
    fn reads_wire_names() {
        assert_eq!(field_names::<Page>(), Some(&["start", "type"][..]));
        assert_eq!(field_names::<Empty>(), Some(&[][..]));
        assert_eq!(field_names::<u32>(), None);
    }
}
