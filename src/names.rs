//! The names a recipe gives things, as types: a node's name, an axis and its
//! values, and the id of one instance.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! name_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                $name(s.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
    };
}

name_newtype!(
    /// The name of a `source`, `toolchain`, `build`, `sysext` or `release` node.
    NodeName
);
name_newtype!(
    /// A matrix axis: `version`, `arch`.
    AxisName
);
name_newtype!(
    /// One value of an axis: `2.3.4`, `arm64`.
    AxisValue
);
name_newtype!(
    /// One instance of a node for one combination of its axes: `NAME@v1/v2` for
    /// builds, `KIND:NAME@v1/v2` for the other kinds.
    InstanceId
);

impl InstanceId {
    /// A name for files that hold something of this instance: unique per id (ids
    /// hold `/`, `@` and `:`, which are percent-encoded, as is `%`).
    pub fn file_name(&self) -> String {
        let mut name = String::with_capacity(self.0.len());
        for b in self.0.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@') {
                name.push(b as char);
            } else {
                name.push_str(&format!("%{b:02X}"));
            }
        }
        name
    }
}

impl InstanceId {
    /// The id as a relative path, one component per axis value after the first
    /// (`keepalived@2.3.4/arm64`): unique per id, as axis values hold no `/` and
    /// are never `.` or `..`.
    pub fn as_path(&self) -> std::path::PathBuf {
        let plain = self
            .0
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
        if plain {
            std::path::PathBuf::from(&self.0)
        } else {
            std::path::PathBuf::from(self.file_name())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_unique_per_id() {
        let a = InstanceId::new("a@x-y/z").file_name();
        let b = InstanceId::new("a@x/y-z").file_name();
        assert_ne!(a, b);
        assert_eq!(a, "a@x-y%2Fz");
        assert_ne!(
            InstanceId::new("a%2F").file_name(),
            InstanceId::new("a/").file_name()
        );
    }
}
