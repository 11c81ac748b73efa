//! The deployment files, checked where docker and a cluster cannot run: `deploy/compose.yaml`
//! and `deploy/k8s/*.yaml` parse, every reference in them resolves, images are pinned, and every
//! `LEDGER_*` variable they or the Dockerfile set is one the binary reads.

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

/// What the binary reads besides its `LEDGER_*` options: the log filter and OpenTelemetry's.
const OTHER_VARIABLES: [&str; 3] = [
    "RUST_LOG",
    "OTEL_SERVICE_NAME",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

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
                if let Some(file) = source.strip_prefix("./") {
                    deploy_file(file);
                } else {
                    assert!(
                        volumes.contains(source),
                        "{name}: volume {source} is not declared"
                    );
                }
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
fn every_server_exports_telemetry_to_a_collector_that_passes_it_on() {
    let documents = YamlLoader::load_from_str(&deploy_file("compose.yaml")).unwrap();
    let services = merged(&merged(&documents[0])["services"]);
    let host_of = |endpoint: &str| {
        let authority = endpoint.split("://").nth(1).unwrap_or(endpoint);
        authority.split([':', '/']).next().unwrap().to_owned()
    };
    for (name, service) in &services {
        let service = merged(service);
        let environment = merged(service.get("environment").unwrap_or(&Yaml::Null));
        if !environment.contains_key("LEDGER_STORE") {
            continue;
        }
        let endpoint = environment["OTEL_EXPORTER_OTLP_ENDPOINT"].as_str().unwrap();
        let collector = merged(&services[&host_of(endpoint)]);
        assert!(
            names(collector.get("profiles")).is_superset(&names(service.get("profiles"))),
            "{name}: its collector does not start with it"
        );
        let own_networks = names(service.get("networks"));
        if !own_networks.is_empty() {
            assert!(
                !own_networks.is_disjoint(&names(collector.get("networks"))),
                "{name}: shares no network with its collector"
            );
        }
    }

    let config = &YamlLoader::load_from_str(&deploy_file("otel-collector.yaml")).unwrap()[0];
    let defined = |section: &str| names(Some(&config[section]));
    let pipelines = merged(&config["service"]["pipelines"]);
    assert_eq!(
        pipelines.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from(["metrics".to_owned(), "traces".to_owned()])
    );
    for (signal, pipeline) in &pipelines {
        for section in ["receivers", "processors", "exporters"] {
            let used = names(Some(&pipeline[section]));
            assert!(!used.is_empty(), "{signal}: no {section}");
            assert!(
                used.is_subset(&defined(section)),
                "{signal}: {section} {used:?} not defined"
            );
        }
    }
    let jaeger = config["exporters"]["otlp/jaeger"]["endpoint"]
        .as_str()
        .unwrap();
    assert!(services.contains_key(&host_of(jaeger)), "{jaeger}");
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

/// Every document of `deploy/k8s/*.yaml`, by kind.
fn kubernetes_manifests() -> BTreeMap<String, Yaml> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s");
    let mut by_kind = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for document in
            YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        {
            let kind = document["kind"].as_str().expect("a kind").to_owned();
            assert!(
                by_kind.insert(kind.clone(), document).is_none(),
                "two {kind}s"
            );
        }
    }
    by_kind
}

fn string_keys(node: &Yaml) -> BTreeSet<String> {
    names(Some(node))
}

#[test]
fn the_kubernetes_manifests_fit_together_and_set_only_known_variables() {
    let manifests = kubernetes_manifests();
    let kinds: Vec<_> = manifests.keys().map(String::as_str).collect();
    assert_eq!(kinds, ["ConfigMap", "Deployment", "Secret", "Service"]);
    let (config, deployment, secret, service) = (
        &manifests["ConfigMap"],
        &manifests["Deployment"],
        &manifests["Secret"],
        &manifests["Service"],
    );
    let pod = &deployment["spec"]["template"];
    let labels = merged(&pod["metadata"]["labels"]);
    for selector in [
        &deployment["spec"]["selector"]["matchLabels"],
        &service["spec"]["selector"],
    ] {
        for (key, value) in merged(selector) {
            assert_eq!(
                labels.get(&key),
                Some(&value),
                "selector {key} matches no pod label"
            );
        }
    }

    let [container] = pod["spec"]["containers"].as_vec().unwrap().as_slice() else {
        panic!("one container");
    };
    let image = container["image"].as_str().unwrap();
    assert!(
        image.contains(':') && !image.ends_with(":latest"),
        "image not pinned: {image}"
    );
    let port = &container["ports"][0];
    assert_eq!(port["containerPort"].as_i64(), Some(50051));
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"].as_str(),
        port["name"].as_str()
    );
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        assert_eq!(
            container[probe]["grpc"]["port"].as_i64(),
            Some(50051),
            "{probe} is not the gRPC health check"
        );
    }
    for bound in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                !container["resources"][bound][resource].is_badvalue(),
                "no {bound}.{resource}"
            );
        }
    }
    // The image's user (see the Dockerfile), never root.
    assert_eq!(
        pod["spec"]["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
    assert_eq!(
        pod["spec"]["securityContext"]["runAsUser"].as_i64(),
        Some(10001)
    );
    assert!(deploy_file("Dockerfile").contains("--uid 10001"));

    // Variables: from the ConfigMap, and the store URL from the Secret.
    let config_name = config["metadata"]["name"].as_str().unwrap();
    let secret_name = secret["metadata"]["name"].as_str().unwrap();
    assert_eq!(
        container["envFrom"][0]["configMapRef"]["name"].as_str(),
        Some(config_name)
    );
    let secret_keys = string_keys(&secret["stringData"]);
    let mut variables = string_keys(&config["data"]);
    for env in container["env"].as_vec().unwrap() {
        let reference = &env["valueFrom"]["secretKeyRef"];
        assert_eq!(reference["name"].as_str(), Some(secret_name));
        assert!(secret_keys.contains(reference["key"].as_str().unwrap()));
        variables.insert(env["name"].as_str().unwrap().to_owned());
    }
    let known = variables_the_binary_reads();
    for variable in &variables {
        assert!(
            known.contains(variable) || OTHER_VARIABLES.contains(&variable.as_str()),
            "{variable} is not a variable dialogue-ledger serve reads"
        );
    }
    assert!(variables.contains("LEDGER_STORE_URL"));
    assert_eq!(
        config["data"]["LEDGER_LISTEN"].as_str(),
        Some("0.0.0.0:50051")
    );
    let grace: i64 = config["data"]["LEDGER_SHUTDOWN_GRACE_SECS"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        pod["spec"]["terminationGracePeriodSeconds"]
            .as_i64()
            .unwrap()
            > grace
    );

    // Every mount has its volume; the key files the settings name are in the Secret's volume.
    let volumes: BTreeMap<_, _> = (pod["spec"]["volumes"].as_vec().unwrap().iter())
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    let mut mounted = BTreeMap::new();
    for mount in container["volumeMounts"].as_vec().unwrap() {
        let name = mount["name"].as_str().unwrap();
        assert!(volumes.contains_key(name), "no volume {name}");
        mounted.insert(mount["mountPath"].as_str().unwrap(), volumes[name]);
    }
    assert!(mounted.contains_key(config["data"]["LEDGER_DATA_DIR"].as_str().unwrap()));
    for setting in ["LEDGER_JWT_PUBLIC_KEY", "LEDGER_CHECKPOINT_KEY"] {
        let path = Path::new(config["data"][setting].as_str().unwrap());
        let directory = path.parent().unwrap().to_str().unwrap();
        let file = path.file_name().unwrap().to_str().unwrap();
        let volume = mounted
            .get(directory)
            .unwrap_or_else(|| panic!("{setting}: nothing mounted at {directory}"));
        assert_eq!(volume["secret"]["secretName"].as_str(), Some(secret_name));
        let items = volume["secret"]["items"].as_vec().unwrap();
        assert!(
            items.iter().any(|i| i["path"].as_str() == Some(file)
                && secret_keys.contains(i["key"].as_str().unwrap())),
            "{setting}: {file} is not in the Secret's volume"
        );
    }
}
