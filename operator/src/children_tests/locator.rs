//! The locator's settings: the managed Redis locked by a generated password, an external Redis's
//! credentials and CA from Secret references, and the specs the binary cannot use refused.

use super::*;

#[test]
fn the_managed_redis_is_locked_by_a_generated_password() {
    let built = build(GameClusterSpec::default());
    let redis = built.redis.as_ref().expect("a managed Redis");
    assert_eq!(redis.auth_secret.name.as_deref(), Some("arena-redis-auth"));
    assert_eq!(
        redis
            .auth_secret
            .owner_references
            .as_ref()
            .map(|owners| owners[0].uid.as_str()),
        Some("uid-1"),
        "the GameCluster owns the Secret"
    );
    let server = container(&redis.deployment);
    let args = server.args.clone().unwrap_or_default();
    assert_eq!(args[0], "/etc/switchyard-redis/redis.conf", "{args:?}");
    let protected = args.windows(2).any(|pair| pair == ["--protected-mode", "yes"]);
    assert!(protected, "{args:?}");
    let conf = pod(&redis.deployment)
        .volumes
        .iter()
        .flatten()
        .find(|volume| volume.name == "config")
        .and_then(|volume| volume.secret.as_ref())
        .expect("the configuration comes from the Secret");
    assert_eq!(conf.secret_name.as_deref(), Some("arena-redis-auth"));
    assert_eq!(conf.default_mode, Some(0o440));
    for deployment in [&built.gate_deployment, &built.pools[0].deployment] {
        let process = container(deployment);
        assert_eq!(
            env_secret(process, "SWITCHYARD_LOCATOR_PASSWORD"),
            Some(("arena-redis-auth".to_owned(), "password".to_owned()))
        );
        assert_eq!(env_secret(process, "SWITCHYARD_LOCATOR_USERNAME"), None);
        assert_eq!(env_value(process, "SWITCHYARD_LOCATOR_CA"), None);
    }

    let password = crate::locator::generate_password();
    assert_eq!(password.len(), 48);
    assert!(password.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_ne!(password, crate::locator::generate_password());
    let secret = crate::locator::auth_secret(redis.auth_secret.clone(), &password);
    let data = secret.data.expect("data");
    assert_eq!(data["password"].0, password.as_bytes());
    let conf = String::from_utf8(data["redis.conf"].0.clone()).expect("UTF-8");
    assert!(conf.contains(&format!("requirepass {password}\n")), "{conf}");
    assert!(conf.contains("protected-mode yes"), "{conf}");
    assert_eq!(secret.immutable, Some(true));
}

#[test]
fn an_external_redis_gets_its_credentials_and_ca_from_the_spec_references() {
    let mut spec = GameClusterSpec::default();
    spec.locator.redis = Some(locked_external_redis());
    let built = build(spec);
    assert!(built.redis.is_none());
    for deployment in [&built.gate_deployment, &built.pools[0].deployment] {
        let process = container(deployment);
        assert_eq!(
            env_secret(process, "SWITCHYARD_LOCATOR_PASSWORD"),
            Some(("redis-creds".to_owned(), "password".to_owned()))
        );
        assert_eq!(
            env_secret(process, "SWITCHYARD_LOCATOR_USERNAME"),
            Some(("redis-creds".to_owned(), "user".to_owned()))
        );
        assert_eq!(
            env_value(process, "SWITCHYARD_LOCATOR_CA").as_deref(),
            Some("/etc/switchyard/locator-ca/ca.crt")
        );
        let mounted = process
            .volume_mounts
            .iter()
            .flatten()
            .any(|mount| mount.name == "locator-ca" && mount.mount_path == "/etc/switchyard/locator-ca");
        assert!(mounted, "{:?}", process.volume_mounts);
        let volume = pod(deployment)
            .volumes
            .iter()
            .flatten()
            .find(|volume| volume.name == "locator-ca")
            .and_then(|volume| volume.config_map.as_ref())
            .expect("the CA volume");
        assert_eq!(volume.name, "redis-ca");
        let item = &volume.items.as_ref().expect("items")[0];
        assert_eq!((item.key.as_str(), item.path.as_str()), ("ca.pem", "ca.crt"));
    }
}

#[test]
fn locator_specs_the_binary_cannot_use_are_refused() {
    let refused = |redis: RedisLocatorSpec| {
        let mut spec = GameClusterSpec::default();
        spec.locator.redis = Some(redis);
        match children(&cluster(spec), &Defaults::default()) {
            Err(SpecError::Invalid(message)) => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    };
    let with_url = |url: &str| RedisLocatorSpec {
        url: url.into(),
        ..Default::default()
    };
    assert!(refused(with_url("redis://:hunter2@redis:6379")).contains("must not carry a password"));
    assert!(refused(with_url("redis://u:hunter2@redis:6379")).contains("passwordSecretRef"));
    assert!(refused(with_url("http://redis:6379")).contains("must start with"));
    for prefix in ["has space", "{tag}", &"p".repeat(65), ""] {
        let message = refused(RedisLocatorSpec {
            key_prefix: Some(prefix.to_owned()),
            ..with_url("redis://redis:6379")
        });
        assert!(message.contains("keyPrefix"), "{prefix:?}: {message}");
    }
    let mut no_tls = locked_external_redis();
    no_tls.url = "redis://redis:6379".into();
    assert!(refused(no_tls).contains("needs a rediss:// URL"));
    let mut both = locked_external_redis();
    if let Some(ca) = both.ca.as_mut() {
        ca.secret_name = Some("also".into());
    }
    assert!(refused(both).contains("exactly one"));
}
