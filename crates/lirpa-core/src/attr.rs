//! Node attributes, as importers hand them to operator builders.

use crate::{Error, Result, TensorData};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Float(f64),
    Int(i64),
    String(String),
    Tensor(TensorData),
    Floats(Vec<f64>),
    Ints(Vec<i64>),
    Strings(Vec<String>),
}

/// Named attributes of one node, with typed getters whose errors name the attribute.
///
/// The getters record which attributes were read, so that the graph builder can
/// refuse an attribute no builder looked at (a misspelt `beta` would otherwise be
/// ignored silently; see [`Attributes::unread`]).
#[derive(Debug, Default)]
pub struct Attributes(pub BTreeMap<String, Attr>, Read);

/// The names read through the getters.
#[derive(Debug, Default)]
pub struct Read(std::sync::Mutex<std::collections::BTreeSet<String>>);

impl Clone for Attributes {
    fn clone(&self) -> Self {
        Attributes(self.0.clone(), Read::default())
    }
}

impl PartialEq for Attributes {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Attributes {
    pub fn insert(&mut self, name: impl Into<String>, value: Attr) {
        self.0.insert(name.into(), value);
    }
    pub fn get(&self, name: &str) -> Option<&Attr> {
        self.mark(name);
        self.0.get(name)
    }
    /// Record that `name` was read (the getters do it).
    pub fn mark(&self, name: &str) {
        if self.0.contains_key(name)
            && let Ok(mut r) = self.1.0.lock()
        {
            r.insert(name.to_string());
        }
    }
    /// Forget which attributes were read.
    pub fn clear_read(&self) {
        if let Ok(mut r) = self.1.0.lock() {
            r.clear();
        }
    }
    /// The attributes not read since [`Attributes::clear_read`].
    pub fn unread(&self) -> Vec<&str> {
        let r = self.1.0.lock().map(|r| r.clone()).unwrap_or_default();
        self.0.keys().filter(|k| !r.contains(k.as_str())).map(|k| k.as_str()).collect()
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(|k| k.as_str())
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>> {
        self.mark(name);
        match self.0.get(name) {
            None => Ok(None),
            Some(Attr::Int(i)) => Ok(Some(*i)),
            Some(other) => Err(wrong_type(name, "an integer", other)),
        }
    }
    pub fn int_or(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.int(name)?.unwrap_or(default))
    }
    pub fn float(&self, name: &str) -> Result<Option<f64>> {
        self.mark(name);
        match self.0.get(name) {
            None => Ok(None),
            Some(Attr::Float(f)) => Ok(Some(*f)),
            Some(Attr::Int(i)) => Ok(Some(*i as f64)),
            Some(other) => Err(wrong_type(name, "a float", other)),
        }
    }
    pub fn float_or(&self, name: &str, default: f64) -> Result<f64> {
        Ok(self.float(name)?.unwrap_or(default))
    }
    pub fn ints(&self, name: &str) -> Result<Option<&[i64]>> {
        self.mark(name);
        match self.0.get(name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v)),
            Some(other) => Err(wrong_type(name, "a list of integers", other)),
        }
    }
    pub fn string(&self, name: &str) -> Result<Option<&str>> {
        self.mark(name);
        match self.0.get(name) {
            None => Ok(None),
            Some(Attr::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(name, "a string", other)),
        }
    }
    pub fn tensor(&self, name: &str) -> Result<Option<&TensorData>> {
        self.mark(name);
        match self.0.get(name) {
            None => Ok(None),
            Some(Attr::Tensor(t)) => Ok(Some(t)),
            Some(other) => Err(wrong_type(name, "a tensor", other)),
        }
    }
}

fn wrong_type(name: &str, expected: &str, found: &Attr) -> Error {
    Error::Invalid(format!("attribute '{name}' should be {expected}, found {found:?}"))
}
