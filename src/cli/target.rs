//! Which fleet a command is about: the positional CONFIG, `-c/--config`, `LOOPD_CONFIG`, or
//! `./loopd.toml`, and how a positional fleet file is told apart from a loop name.
//!
//! The rule, the same for every command that takes `[CONFIG] NAMES...`: the first positional
//! argument is the fleet file when it ends in `.toml`, when it contains a `/`, or when there is
//! one more positional argument than the command takes names. Loop and test names never contain
//! a `/`, so `./fleet` names a file whatever its extension. The rule does not look at the disk:
//! the same words mean the same thing in every folder.

use std::path::{Path, PathBuf};

use super::Exit;

/// The fleet file a command uses, and whether a person named it.
#[derive(Debug, Clone)]
pub struct FleetRef {
    /// The file.
    pub path: PathBuf,
    /// Named as a positional argument, with `-c` or `LOOPD_CONFIG`; false for the
    /// `./loopd.toml` default, which a client may fall back from (to the default address).
    pub named: bool,
}

/// The default fleet file, in the current folder.
pub const DEFAULT_FILE: &str = "loopd.toml";

impl FleetRef {
    /// The positional file, else `-c`/`LOOPD_CONFIG`, else `./loopd.toml`.
    pub fn resolve(positional: Option<PathBuf>, flag: Option<&PathBuf>) -> FleetRef {
        match positional.or_else(|| flag.cloned()) {
            Some(path) => FleetRef { path, named: true },
            None => FleetRef {
                path: PathBuf::from(DEFAULT_FILE),
                named: false,
            },
        }
    }

    /// A fleet file passed on as a bare path (named unless it is the default).
    pub fn from_path(path: &Path) -> FleetRef {
        FleetRef {
            path: path.to_path_buf(),
            named: path != Path::new(DEFAULT_FILE),
        }
    }

    /// `./loopd.toml` for the default, the path as given otherwise.
    pub fn shown(&self) -> String {
        if self.named || self.path.is_absolute() {
            self.path.display().to_string()
        } else {
            format!("./{}", self.path.display())
        }
    }

    /// "no fleet file found (tried ...)" when the file does not exist: a missing file is not a
    /// validation problem.
    pub fn require_file(&self, command: &str) -> Result<(), Exit> {
        if self.path.exists() {
            return Ok(());
        }
        let how = if self.named {
            ""
        } else {
            " (the default; name one with -c FILE, LOOPD_CONFIG, or as the first argument)"
        };
        let who = if command.is_empty() {
            "loopd".to_string()
        } else {
            format!("loopd {command}")
        };
        eprintln!("{who}: no fleet file found (tried {}{how})", self.shown());
        Err(Exit::Invalid)
    }
}

/// The positional arguments a command takes after its optional fleet file.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// The command, for messages.
    pub command: &'static str,
    /// What it takes, e.g. `[CONFIG] LOOP [TEST]`.
    pub usage: &'static str,
    /// Fewest names.
    pub min: usize,
    /// Most names.
    pub max: usize,
}

impl Shape {
    /// `command` takes `usage`: from `min` to `max` names after the optional fleet file.
    pub const fn new(command: &'static str, usage: &'static str, min: usize, max: usize) -> Shape {
        Shape {
            command,
            usage,
            min,
            max,
        }
    }
}

/// [`split`], then the fleet file resolved with `-c`/`LOOPD_CONFIG` (`flag`) and the default.
pub fn resolve(
    args: &[String],
    shape: Shape,
    flag: Option<&PathBuf>,
) -> Result<(FleetRef, Vec<String>), Exit> {
    let (config, names) = split(args, shape)?;
    Ok((FleetRef::resolve(config, flag), names))
}

/// `args` split into the fleet file (when the first one is one, by the rule of this module)
/// and the names; a wrong count is refused naming what the command takes.
pub fn split(args: &[String], shape: Shape) -> Result<(Option<PathBuf>, Vec<String>), Exit> {
    let is_file = |a: &str| a.ends_with(".toml") || a.contains('/');
    let (config, names) = match args.split_first() {
        Some((first, rest)) if is_file(first) || args.len() > shape.max => {
            (Some(PathBuf::from(first)), rest.to_vec())
        }
        _ => (None, args.to_vec()),
    };
    if names.len() < shape.min || names.len() > shape.max {
        eprintln!(
            "loopd {}: expected {}, got {}",
            shape.command,
            shape.usage,
            if args.is_empty() {
                "nothing".to_string()
            } else {
                format!("`{}`", args.join(" "))
            }
        );
        return Err(Exit::Invalid);
    }
    Ok((config, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTEMPTS: Shape = Shape::new("attempts", "[CONFIG] LOOP [TEST]", 1, 2);

    fn words(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_fleet_file_is_told_apart_from_a_loop_name() {
        let s = |v: &[&str]| split(&words(v), ATTEMPTS).ok();
        assert_eq!(s(&["main"]), Some((None, words(&["main"]))));
        assert_eq!(s(&["main", "T1"]), Some((None, words(&["main", "T1"]))));
        assert_eq!(
            s(&["f.toml", "main"]),
            Some((Some("f.toml".into()), words(&["main"])))
        );
        assert_eq!(
            s(&["./fleet", "main"]),
            Some((Some("./fleet".into()), words(&["main"])))
        );
        // One word more than the names it takes: the first is the fleet file.
        assert_eq!(
            s(&["fleet", "main", "T1"]),
            Some((Some("fleet".into()), words(&["main", "T1"])))
        );
        assert_eq!(s(&[]), None, "a loop is required");
        assert_eq!(s(&["f.toml"]), None, "a fleet file is not a loop");
        assert_eq!(s(&["a", "b", "c", "d"]), None);
    }

    #[test]
    fn the_default_file_is_not_named() {
        let d = FleetRef::resolve(None, None);
        assert!(!d.named);
        assert_eq!(d.shown(), "./loopd.toml");
        let flag = PathBuf::from("x.toml");
        assert!(FleetRef::resolve(None, Some(&flag)).named);
        let pos = FleetRef::resolve(Some("y.toml".into()), Some(&flag));
        assert_eq!(pos.path, PathBuf::from("y.toml"), "the positional wins");
    }
}
