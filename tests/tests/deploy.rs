//! The deployment files, checked where docker cannot run: `deploy/compose.yaml` parses, every
//! reference in it resolves, images are pinned, and every `LEDGER_*` variable it or the
//! Dockerfile sets is one the binary reads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

fn deploy_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A mapping with YAML merge keys (`<<: *anchor`) applied, as compose applies them.
fn merged(node: &Yaml) -> BTreeMap<String, Yaml> {
    let mut out = BTreeMap::new();
    let Yaml::Hash(hash) = node else {
        return out;
    };
    if let Some(base) = hash.get(&Yaml::String("<<".into())) {
        out.extend(merged(base));
    }
    for (key, value) in hash {
        if let Yaml::String(key) = key
            && key != "<<"
        {
            let value = match (out.get(key), value) {
                (Some(Yaml::Hash(_)), Yaml::Hash(_)) if key == "environment" => Yaml::Hash(
                    merged(value)
                        .into_iter()
                        .map(|(k, v)| (Yaml::String(k), v))
                        .collect(),
                ),
                _ => value.clone(),
            };
            out.insert(key.clone(), value);
        }
    }
    out
}

fn names(node: Option<&Yaml>) -> BTreeSet<String> {
    match node {
        Some(Yaml::Hash(hash)) => hash
            .keys()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect(),
        Some(Yaml::Array(items)) => items
            .iter()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect(),
        _ => BTreeSet::new(),
    }
}

/// The `LEDGER_*` variables `dialogue-ledger serve` reads, from its help.
fn variables_the_binary_reads() -> BTreeSet<String> {
    let help = std::process::Command::new(ledger_e2e::server::server_binary())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    help.split("env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_compose_file_resolves_and_sets_only_known_variables() {
    let documents = YamlLoader::load_from_str(&deploy_file("compose.yaml")).unwrap();
    let compose = merged(&documents[0]);
    let services = merged(&compose["services"]);
    let volumes = names(compose.get("volumes"));
    let networks = names(compose.get("networks"));
    let known = variables_the_binary_reads();
    assert!(
        known.contains("LEDGER_STORE"),
        "help lists no variables: {known:?}"
    );

    let mut profiles_with_ledger = BTreeSet::new();
    for (name, service) in &services {
        let service = merged(service);
        let image = service["image"].as_str().unwrap_or_default();
        assert!(
            image.contains(':') && !image.ends_with(":latest"),
            "{name}: image {image:?} is not pinned"
        );
        let profiles = names(service.get("profiles"));
        assert!(!profiles.is_empty(), "{name}: no profile");
        for dependency in names(service.get("depends_on")) {
            let other = merged(&services[&dependency]);
            assert!(
                names(other.get("profiles")).is_superset(&profiles),
                "{name} depends on {dependency}, which its profile does not start"
            );
        }
        if let Some(Yaml::Array(mounts)) = service.get("volumes") {
            for mount in mounts {
                let source = mount.as_str().unwrap().split(':').next().unwrap();
                assert!(
                    volumes.contains(source),
                    "{name}: volume {source} is not declared"
                );
            }
        }
        for network in names(service.get("networks")) {
            assert!(
                networks.contains(&network),
                "{name}: network {network} is not declared"
            );
        }
        let environment = merged(service.get("environment").unwrap_or(&Yaml::Null));
        let ledger_variables: Vec<&String> = environment
            .keys()
            .filter(|key| key.starts_with("LEDGER_"))
            .collect();
        for variable in &ledger_variables {
            assert!(
                known.contains(*variable),
                "{name}: the binary does not read {variable}"
            );
        }
        if !ledger_variables.is_empty() {
            let store = environment["LEDGER_STORE"].as_str().unwrap();
            assert!(
                ["postgres", "eventstoredb"].contains(&store),
                "{name}: {store}"
            );
            assert!(
                environment.contains_key("LEDGER_STORE_URL"),
                "{name}: no store URL"
            );
            profiles_with_ledger.extend(profiles);
        }
    }
    assert_eq!(
        profiles_with_ledger,
        BTreeSet::from(["eventstoredb".to_owned(), "postgres".to_owned()])
    );
    let esdb_nodes = services.keys().filter(|s| s.starts_with("esdb-")).count();
    assert_eq!(esdb_nodes, 3, "the EventStoreDB cluster has three nodes");
}

#[test]
fn the_image_runs_the_server_as_a_non_root_user() {
    let dockerfile = deploy_file("Dockerfile");
    assert!(
        dockerfile.matches("\nFROM ").count() + usize::from(dockerfile.starts_with("FROM ")) >= 2
    );
    assert!(
        dockerfile.contains("\nUSER ledger"),
        "not run as a non-root user"
    );
    let known = variables_the_binary_reads();
    for variable in dockerfile
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("LEDGER_"))
    {
        assert!(
            known.contains(variable),
            "the binary does not read {variable}"
        );
    }
}
