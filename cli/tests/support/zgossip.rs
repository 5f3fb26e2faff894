//! Starting this crate's own `zgossip node` binary as a [`LinePeer`].

use std::path::Path;

use super::LinePeer;

impl LinePeer {
    /// Starts `zgossip node` with `args` (e.g. `["--bind", "tcp://127.0.0.1:*"]`), named
    /// `zgossip` in failure messages.
    pub fn zgossip(args: &[&str]) -> LinePeer {
        LinePeer::zgossip_named("zgossip", args)
    }

    /// Starts `zgossip node` with `args`, named `name` in failure messages.
    pub fn zgossip_named(name: &str, args: &[&str]) -> LinePeer {
        let mut all = vec!["node"];
        all.extend_from_slice(args);
        LinePeer::spawn(name, Path::new(env!("CARGO_BIN_EXE_zgossip")), &all)
    }
}
