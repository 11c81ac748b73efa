//! The config file layer of the server's options: defaults, then a TOML file, then `LEDGER_*`
//! environment variables, then flags. The file's keys are the flags' names (`rate-limit = 100`);
//! its settings enter the command line, for each setting that neither a flag nor its variable
//! sets, so the command-line parser checks them like any flag.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Context;

/// The subcommands that read the config file.
const READERS: [&str; 2] = ["serve", "config"];

/// The command line with the config file's settings in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layered {
    pub args: Vec<OsString>,
    /// The ids of the options whose value came from the file.
    pub from_file: BTreeSet<String>,
}

/// Puts the settings of the config file (`--config FILE` on the command line, or the variable
/// `LEDGER_CONFIG`) into `args`. `command` is the whole command-line interface; `env` reads
/// the environment. Unknown keys, values that are not a string, number or boolean, and a file
/// that cannot be read are errors.
pub fn layer(
    args: Vec<OsString>,
    command: &clap::Command,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Layered> {
    let unchanged = |args| Layered {
        args,
        from_file: BTreeSet::new(),
    };
    let Some(at) = args.iter().position(|a| READERS.iter().any(|r| a == r)) else {
        return Ok(unchanged(args));
    };
    let Some(path) =
        config_path(&args[at + 1..]).or_else(|| env("LEDGER_CONFIG").map(PathBuf::from))
    else {
        return Ok(unchanged(args));
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("the config file {} is not TOML", path.display()))?;
    let subcommand = (command.find_subcommand(args[at].to_str().unwrap_or_default()))
        .expect("a subcommand that reads the config file");
    let mut settings = Vec::new();
    let mut from_file = BTreeSet::new();
    for (key, value) in table {
        let arg = (subcommand.get_arguments())
            .find(|a| a.get_long() == Some(key.as_str()) && key != "config")
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown key {key:?} in the config file {} (its keys are the flags of `serve`, e.g. rate-limit)",
                    path.display()
                )
            })?;
        let value = match value {
            toml::Value::String(text) => text,
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Float(x) => x.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => anyhow::bail!(
                "{key} in the config file {} must be a string, number or boolean",
                path.display()
            ),
        };
        let flagged = args[at + 1..].iter().any(|a| {
            a.to_str()
                .is_some_and(|a| a == format!("--{key}") || a.starts_with(&format!("--{key}=")))
        });
        let overridden = flagged
            || (arg.get_env())
                .and_then(|variable| variable.to_str())
                .is_some_and(|variable| env(variable).is_some());
        if !overridden {
            settings.push(OsString::from(format!("--{key}={value}")));
            from_file.insert(arg.get_id().to_string());
        }
    }
    let mut layered = args;
    layered.splice(at + 1..at + 1, settings);
    Ok(Layered {
        args: layered,
        from_file,
    })
}

/// The value of `--config FILE` or `--config=FILE` among a subcommand's arguments.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let arg = arg.to_str()?;
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    None
}

/// The effective value of every option of `matches` (a subcommand's), with where it came from,
/// as TOML a config file could hold. Options whose environment values are hidden (they carry
/// secrets) print as `"<redacted>"`.
pub fn describe(
    subcommand: &clap::Command,
    matches: &clap::ArgMatches,
    from_file: &BTreeSet<String>,
) -> String {
    let mut out = String::new();
    for arg in subcommand.get_arguments() {
        let (id, Some(long)) = (arg.get_id().as_str(), arg.get_long()) else {
            continue;
        };
        if long == "config" || long == "help" {
            continue;
        }
        let Some(values) = matches.get_raw(id) else {
            out.push_str(&format!("# {long} is not set\n"));
            continue;
        };
        let value: Vec<_> = values.map(|v| v.to_string_lossy().into_owned()).collect();
        let value = value.join(",");
        let source = if from_file.contains(id) {
            "config file".to_owned()
        } else {
            match matches.value_source(id) {
                Some(clap::parser::ValueSource::EnvVariable) => match arg.get_env() {
                    Some(variable) => format!("environment ({})", variable.to_string_lossy()),
                    None => "environment".to_owned(),
                },
                Some(clap::parser::ValueSource::CommandLine) => "flag".to_owned(),
                _ => "default".to_owned(),
            }
        };
        let shown = if arg.is_hide_env_values_set() {
            "\"<redacted>\"".to_owned()
        } else if value.parse::<f64>().is_ok() {
            value
        } else {
            format!("{value:?}")
        };
        out.push_str(&format!("{long} = {shown}  # {source}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cli() -> clap::Command {
        let serve = clap::Command::new("serve")
            .arg(clap::Arg::new("config").long("config").env("LEDGER_CONFIG"))
            .arg(
                clap::Arg::new("rate_limit")
                    .long("rate-limit")
                    .env("LEDGER_RATE_LIMIT")
                    .default_value("0"),
            )
            .arg(
                clap::Arg::new("store_url")
                    .long("store-url")
                    .env("LEDGER_STORE_URL")
                    .hide_env_values(true),
            )
            .arg(
                clap::Arg::new("listen")
                    .long("listen")
                    .default_value("127.0.0.1:50051"),
            );
        clap::Command::new("dialogue-ledger")
            .subcommand(serve.clone())
            .subcommand(serve.name("config"))
            .subcommand(clap::Command::new("token"))
    }

    fn file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path.to_str().unwrap().to_owned())
    }

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    fn layered(words: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Layered> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        layer(args(words), &cli(), |name| env.get(name).cloned())
    }

    #[test]
    fn the_file_sits_between_the_defaults_and_the_environment_and_flags() {
        let (_dir, path) = file("rate-limit = 100\nstore-url = \"postgres://u:secret@db/l\"\n");
        let with = layered(
            &[
                "ledger",
                "serve",
                "--config",
                &path,
                "--listen",
                "0.0.0.0:1",
            ],
            &[],
        )
        .unwrap();
        let matches = cli().get_matches_from(&with.args);
        let serve = matches.subcommand_matches("serve").unwrap();
        assert_eq!(serve.get_one::<String>("rate_limit").unwrap(), "100");
        assert_eq!(serve.get_one::<String>("listen").unwrap(), "0.0.0.0:1");
        assert_eq!(
            with.from_file,
            BTreeSet::from(["rate_limit".into(), "store_url".into()])
        );

        // The environment wins over the file, a flag over both.
        let env = [("LEDGER_RATE_LIMIT", "7"), ("LEDGER_CONFIG", path.as_str())];
        let with = layered(&["ledger", "serve"], &env).unwrap();
        assert_eq!(with.from_file, BTreeSet::from(["store_url".into()]));
        let with = layered(
            &["ledger", "serve", "--config", &path, "--rate-limit", "9"],
            &[],
        )
        .unwrap();
        let matches = cli().get_matches_from(&with.args);
        let serve = matches.subcommand_matches("serve").unwrap();
        assert_eq!(serve.get_one::<String>("rate_limit").unwrap(), "9");

        // `config` describes the same, with the secret redacted and each value's source.
        let with = layered(&["ledger", "config", "--config", &path], &[]).unwrap();
        let matches = cli().get_matches_from(&with.args);
        let config = cli().find_subcommand("config").unwrap().clone();
        let described = describe(
            &config,
            matches.subcommand_matches("config").unwrap(),
            &with.from_file,
        );
        assert!(
            described.contains("rate-limit = 100  # config file"),
            "{described}"
        );
        assert!(
            described.contains("store-url = \"<redacted>\"  # config file"),
            "{described}"
        );
        assert!(
            described.contains("listen = \"127.0.0.1:50051\"  # default"),
            "{described}"
        );
        assert!(!described.contains("secret"), "{described}");
    }

    #[test]
    fn unknown_keys_tables_and_missing_files_are_errors() {
        let (_dir, path) = file("rate-limits = 100\n");
        let error = layered(&["ledger", "serve", "--config", &path], &[]).unwrap_err();
        assert!(
            error.to_string().contains("unknown key \"rate-limits\""),
            "{error}"
        );
        let (_dir, path) = file("[server]\nlisten = \"x\"\n");
        assert!(layered(&["ledger", "serve", "--config", &path], &[]).is_err());
        let error = layered(&["ledger", "serve", "--config=/nowhere.toml"], &[]).unwrap_err();
        assert!(
            error.to_string().contains("cannot read the config file"),
            "{error}"
        );
        // Other commands do not read it.
        let unchanged = layered(&["ledger", "token"], &[("LEDGER_CONFIG", "/nowhere.toml")]);
        assert_eq!(unchanged.unwrap().args, args(&["ledger", "token"]));
    }
}
