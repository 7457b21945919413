//! Environment overrides for the `[kafka]` table.
//!
//! The environment is injected through [`Env`] rather than read inside the parser, so parsing
//! stays pure and tests never touch the process environment.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

use serde_spanned::Spanned;

use super::diagnostic::Origin;
use super::keypath::KeyPath;

/// A source of environment variables.
pub trait Env {
    /// The value of `name`, or `None` when it is not set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
///
/// A variable whose value is not valid Unicode is treated as unset, as `std::env::var` does.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<S: BuildHasher> Env for HashMap<String, String, S> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

pub(super) const BOOTSTRAP_SERVERS: &str = "KAFKA_BOOTSTRAP_SERVERS";
pub(super) const SECURITY_PROTOCOL: &str = "KAFKA_SECURITY_PROTOCOL";
pub(super) const SASL_MECHANISM: &str = "KAFKA_SASL_MECHANISM";
pub(super) const SASL_USERNAME: &str = "KAFKA_SASL_USERNAME";
pub(super) const SASL_PASSWORD: &str = "KAFKA_SASL_PASSWORD";
pub(super) const SSL_CA_LOCATION: &str = "KAFKA_SSL_CA_LOCATION";
pub(super) const TOPIC_PREFIX: &str = "KAFKA_TOPIC_PREFIX";
pub(super) const CONSUMER_GROUP: &str = "KAFKA_CONSUMER_GROUP";

/// A setting's value together with where it came from.
#[derive(Debug, Clone)]
pub(super) struct Sourced {
    pub(super) value: String,
    pub(super) origin: Origin,
}

/// The effective value of the `[kafka]` key `key`: the variable `var` when it is set and
/// non-empty, else the file's value.
///
/// Empty counts as unset because deployment templates commonly export every variable and leave
/// the unused ones blank; treating that as "override with nothing" would break them.
pub(super) fn overlay(
    env: &dyn Env,
    var: &'static str,
    file: Option<Spanned<String>>,
    key: KeyPath,
) -> Option<Sourced> {
    if let Some(value) = env.var(var).filter(|value| !value.is_empty()) {
        return Some(Sourced {
            value,
            origin: Origin::Env(var),
        });
    }
    file.map(|value| Sourced {
        origin: Origin::File {
            span: value.span(),
            key,
        },
        value: value.into_inner(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_variables_count_as_unset() {
        let env = HashMap::from([(TOPIC_PREFIX.to_owned(), String::new())]);
        let file = Spanned::new(0..4, "file".to_owned());
        let got = overlay(&env, TOPIC_PREFIX, Some(file), KeyPath::root()).unwrap();
        assert_eq!(got.value, "file");
        assert!(matches!(got.origin, Origin::File { .. }));
    }

    #[test]
    fn set_variables_win() {
        let env = BTreeMap::from([(TOPIC_PREFIX.to_owned(), "env".to_owned())]);
        let file = Spanned::new(0..4, "file".to_owned());
        let got = overlay(&env, TOPIC_PREFIX, Some(file), KeyPath::root()).unwrap();
        assert_eq!(got.value, "env");
        assert!(matches!(got.origin, Origin::Env(TOPIC_PREFIX)));
        assert!(overlay(&env, CONSUMER_GROUP, None, KeyPath::root()).is_none());
    }
}
