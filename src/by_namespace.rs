//! A table keyed by namespace, then name: each namespace's name is held once however many
//! objects it has, and a lookup by `&str` allocates nothing. For per-object entries kept for
//! every resource or Secret the operator follows.

use std::collections::HashMap;

#[derive(Debug)]
pub struct ByNamespace<V>(HashMap<String, HashMap<Box<str>, V>>);

impl<V> Default for ByNamespace<V> {
    fn default() -> Self {
        ByNamespace(HashMap::new())
    }
}

impl<V> ByNamespace<V> {
    pub fn insert(&mut self, namespace: &str, name: &str, value: V) {
        match self.0.get_mut(namespace) {
            Some(names) => names.insert(name.into(), value),
            None => self
                .0
                .entry(namespace.to_string())
                .or_default()
                .insert(name.into(), value),
        };
    }

    /// Removes an entry; a namespace left empty goes with it.
    pub fn remove(&mut self, namespace: &str, name: &str) {
        if let Some(names) = self.0.get_mut(namespace) {
            names.remove(name);
            if names.is_empty() {
                self.0.remove(namespace);
            }
        }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<&V> {
        self.0.get(namespace)?.get(name)
    }

    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        self.get(namespace, name).is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries of one namespace: name, value.
    pub fn in_namespace<'a>(&'a self, namespace: &str) -> impl Iterator<Item = (&'a str, &'a V)> {
        self.0
            .get(namespace)
            .into_iter()
            .flat_map(|names| names.iter().map(|(n, v)| (&**n, v)))
    }

    /// Keeps the entries `keep` says to; a namespace left empty goes.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str, &mut V) -> bool) {
        self.0.retain(|namespace, names| {
            names.retain(|name, value| keep(namespace, name, value));
            !names.is_empty()
        });
    }

    /// Every entry: namespace, name, value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &V)> {
        self.0
            .iter()
            .flat_map(|(ns, names)| names.iter().map(move |(n, v)| (ns.as_str(), &**n, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_is_held_while_it_has_names() {
        let mut table = ByNamespace::default();
        table.insert("ns", "a", 1);
        table.insert("ns", "b", 2);
        table.insert("ns", "a", 3);
        assert_eq!(table.get("ns", "a"), Some(&3));
        assert_eq!(table.get("other", "a"), None);
        assert_eq!(table.iter().count(), 2);
        table.remove("ns", "a");
        assert!(!table.contains("ns", "a") && table.contains("ns", "b"));
        table.remove("ns", "b");
        assert!(table.is_empty(), "no empty namespace is kept");
        table.insert("ns", "a", 1);
        table.insert("other", "b", 2);
        table.retain(|ns, _, _| ns == "other");
        assert_eq!(table.iter().count(), 1);
        table.retain(|_, _, v| *v != 2);
        assert!(table.is_empty(), "retain drops emptied namespaces too");
    }
}
