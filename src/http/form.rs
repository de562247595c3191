//! Deserializes string-keyed input (query strings, multipart forms, path-free form
//! binding) into an endpoint's typed input.
//!
//! Rules follow the contract's binding (spec §2.4): the first value of a repeated key
//! wins for scalars, an empty value of an integer field is 0, a value that does not
//! parse as the field's type fails (→ 400 / -202). A sequence field takes every value of
//! its key, each split on commas, so `?club_uuids=a,b` and repeated keys both work
//! (decision 21). File parts deserialize into byte fields.

use std::fmt;

use bytes::Bytes;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

/// One value: text, or the bytes of an uploaded file.
#[derive(Debug, Clone)]
pub enum FormValue {
    Text(String),
    File(Bytes),
}

/// Values grouped by key, in first-seen order.
#[derive(Debug, Default, Clone)]
pub struct FormMap {
    entries: Vec<(String, Vec<FormValue>)>,
}

/// Why a form could not be bound to the input type.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FormError(String);

impl de::Error for FormError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

// === impl FormMap ===

impl FormMap {
    /// Parses a raw (percent-encoded) query string.
    pub fn from_query(query: &str) -> Self {
        let mut map = Self::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            map.push(key.into_owned(), FormValue::Text(value.into_owned()));
        }
        map
    }

    /// Adds a value under `key`, after the values already there.
    pub fn push(&mut self, key: String, value: FormValue) {
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, values)) => values.push(value),
            None => self.entries.push((key, vec![value])),
        }
    }

    /// Binds the map to `T`; unknown keys are ignored.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, FormError> {
        T::deserialize(MapDeserializer { map: self })
    }
}

struct MapDeserializer<'a> {
    map: &'a FormMap,
}

impl<'de> de::Deserializer<'de> for MapDeserializer<'_> {
    type Error = FormError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FormError> {
        visitor.visit_map(Entries {
            iter: self.map.entries.iter(),
            pending: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct Entries<'a> {
    iter: std::slice::Iter<'a, (String, Vec<FormValue>)>,
    pending: Option<&'a (String, Vec<FormValue>)>,
}

impl<'de> MapAccess<'de> for Entries<'_> {
    type Error = FormError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, FormError> {
        match self.iter.next() {
            Some(entry) => {
                self.pending = Some(entry);
                seed.deserialize(entry.0.as_str().into_deserializer())
                    .map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, FormError> {
        let (key, values) = self
            .pending
            .take()
            .ok_or_else(|| FormError("value requested before its key".into()))?;
        seed.deserialize(Values { key, values })
    }
}

/// All values of one key.
struct Values<'a> {
    key: &'a str,
    values: &'a [FormValue],
}

impl<'a> Values<'a> {
    fn first_text(&self) -> Result<&'a str, FormError> {
        match self.values.first() {
            Some(FormValue::Text(text)) => Ok(text),
            Some(FormValue::File(_)) => Err(FormError(format!(
                "'{}' must be text, not a file",
                self.key
            ))),
            None => Ok(""),
        }
    }

    fn number<T: std::str::FromStr + Default>(&self, what: &str) -> Result<T, FormError> {
        let text = self.first_text()?.trim();
        if text.is_empty() {
            return Ok(T::default());
        }
        text.parse()
            .map_err(|_| FormError(format!("'{}' must be {what}, got '{text}'", self.key)))
    }
}

macro_rules! deserialize_number {
    ($($method:ident => $visit:ident : $ty:ty, $what:literal;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FormError> {
            visitor.$visit(self.number::<$ty>($what)?)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Values<'_> {
    type Error = FormError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FormError> {
        match self.values.first() {
            Some(FormValue::File(bytes)) => visitor.visit_bytes(bytes),
            _ => visitor.visit_str(self.first_text()?),
        }
    }

    deserialize_number! {
        deserialize_u8 => visit_u8: u8, "a non-negative integer";
        deserialize_u16 => visit_u16: u16, "a non-negative integer";
        deserialize_u32 => visit_u32: u32, "a non-negative 32-bit integer";
        deserialize_u64 => visit_u64: u64, "a non-negative integer";
        deserialize_i8 => visit_i8: i8, "an integer";
        deserialize_i16 => visit_i16: i16, "an integer";
        deserialize_i32 => visit_i32: i32, "a 32-bit integer";
        deserialize_i64 => visit_i64: i64, "a 64-bit integer";
        deserialize_f32 => visit_f32: f32, "a number";
        deserialize_f64 => visit_f64: f64, "a number";
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FormError> {
        match self.first_text()? {
            "" | "false" | "0" => visitor.visit_bool(false),
            "true" | "1" => visitor.visit_bool(true),
            other => Err(FormError(format!(
                "'{}' must be true or false, got '{other}'",
                self.key
            ))),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FormError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, FormError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FormError> {
        visitor.visit_str(self.first_text()?)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FormError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FormError> {
        match self.values.first() {
            Some(FormValue::File(bytes)) => visitor.visit_bytes(bytes),
            Some(FormValue::Text(text)) => visitor.visit_bytes(text.as_bytes()),
            None => visitor.visit_bytes(&[]),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FormError> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FormError> {
        let mut parts = Vec::new();
        for value in self.values {
            match value {
                FormValue::Text(text) => parts.extend(text.split(',').filter(|p| !p.is_empty())),
                FormValue::File(_) => {
                    return Err(FormError(format!(
                        "'{}' must be text, not a file",
                        self.key
                    )));
                }
            }
        }
        visitor.visit_seq(Parts {
            iter: parts.into_iter(),
        })
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char unit unit_struct tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

struct Parts<'a> {
    iter: std::vec::IntoIter<&'a str>,
}

impl<'de> SeqAccess<'de> for Parts<'_> {
    type Error = FormError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, FormError> {
        match self.iter.next() {
            Some(part) => seed.deserialize(part.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default)]
    struct Paging {
        start: u32,
        count: u32,
        name: String,
        ids: Vec<String>,
        #[serde(with = "serde_bytes")]
        file: Vec<u8>,
    }

    #[test]
    fn binds_numbers_strings_and_lists() {
        let paging: Paging =
            FormMap::from_query("start=5&count=&name=%ED%99%8D&ids=a,b&ids=c&start=9")
                .deserialize()
                .expect("binds");
        assert_eq!(
            paging,
            Paging {
                start: 5,
                count: 0,
                name: "홍".into(),
                ids: vec!["a".into(), "b".into(), "c".into()],
                file: vec![],
            }
        );
    }

    #[test]
    fn rejects_negative_and_non_numeric_integers() {
        for query in ["start=-1", "start=abc", "count=1.5", "start=99999999999"] {
            let err = FormMap::from_query(query)
                .deserialize::<Paging>()
                .expect_err(query);
            assert!(err.to_string().contains("must be"), "{query}: {err}");
        }
    }

    #[test]
    fn file_parts_become_bytes_and_are_not_text() {
        let mut map = FormMap::default();
        map.push(
            "file".into(),
            FormValue::File(Bytes::from_static(b"\x89PNG")),
        );
        let paging: Paging = map.deserialize().expect("binds");
        assert_eq!(paging.file, b"\x89PNG");

        let mut map = FormMap::default();
        map.push("name".into(), FormValue::File(Bytes::from_static(b"x")));
        assert!(map.deserialize::<Paging>().is_err());
    }
}
