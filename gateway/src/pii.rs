//! User ids identify minors: logs show a salted hash unless `--log-pii` is set, so lines
//! of one user still correlate without naming them.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

static SHOW: AtomicBool = AtomicBool::new(false);
static SALT: OnceLock<RandomState> = OnceLock::new();

/// Shows real ids in logs from now on.
pub fn show_pii(show: bool) {
    SHOW.store(show, Ordering::Relaxed);
}

/// A value displayed hidden unless PII logging is on.
pub struct Pii<'a>(pub &'a str);

impl fmt::Display for Pii<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if SHOW.load(Ordering::Relaxed) {
            f.write_str(self.0)
        } else {
            let h = SALT.get_or_init(RandomState::new).hash_one(self.0);
            write!(f, "u#{:08x}", h as u32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_by_default_and_stable() {
        let a = Pii("e001").to_string();
        assert!(a.starts_with("u#") && !a.contains("e001"));
        assert_eq!(a, Pii("e001").to_string());
    }
}
