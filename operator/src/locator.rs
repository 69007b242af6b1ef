//! The locator's share of a cluster's children: the Redis URL and key prefix, the credentials and CA
//! that gates and nodes get (`SWITCHYARD_LOCATOR_*`, from Secrets, never inline), and the lock of the
//! managed Redis: a password the operator generates once into the Secret `NAME-redis-auth` (owned by the
//! GameCluster, never regenerated), protected mode on. Pure functions; the reconciler creates the Secret.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, EnvVar, EnvVarSource, KeyToPath, Secret, SecretKeySelector, SecretVolumeSource,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rand::Rng as _;
use switchyard_cluster::contract::{self, env};

use crate::crd::{LocatorSpec, SecretKeyRef};

/// Suffix of the managed Redis's password Secret: `NAME-redis-auth`.
pub const REDIS_AUTH_SUFFIX: &str = "redis-auth";
/// Key of the password in the managed Redis's Secret.
pub const REDIS_PASSWORD_KEY: &str = "password";
/// Key of the managed Redis's configuration file (its `requirepass`) in the same Secret.
pub const REDIS_CONF_KEY: &str = "redis.conf";
/// Where the managed Redis container sees its configuration file.
pub const REDIS_CONF_DIR: &str = "/etc/switchyard-redis";
/// Where gates and nodes see the CA bundle of `spec.locator.redis.ca`.
pub const LOCATOR_CA_DIR: &str = "/etc/switchyard/locator-ca";
/// The volume of that bundle in gate and node pods.
pub const LOCATOR_CA_VOLUME: &str = "locator-ca";
/// Length of a generated password: 48 alphanumerics, about 285 bits.
const PASSWORD_CHARS: usize = 48;
/// The file name of the mounted CA bundle.
const CA_FILE: &str = "ca.crt";

/// Checks the locator part of a spec: what the CRD's CEL rules say, again (an older CRD may be installed).
///
/// # Errors
/// A message naming the field.
pub fn validate(spec: &LocatorSpec) -> Result<(), String> {
    let Some(redis) = &spec.redis else {
        return Ok(());
    };
    if !contract::is_redis_url(&redis.url) {
        return Err(format!(
            "locator.redis.url must start with {}",
            contract::redis_url_schemes_text()
        ));
    }
    if contract::url_has_password(&redis.url) {
        return Err(
            "locator.redis.url must not carry a password: name a Secret in locator.redis.passwordSecretRef"
                .to_owned(),
        );
    }
    if let Some(prefix) = &redis.key_prefix
        && !contract::is_locator_prefix(prefix)
    {
        return Err(
            "locator.redis.keyPrefix must be 1 to 64 characters of A-Z, a-z, 0-9 and : _ . -".to_owned(),
        );
    }
    for (field, reference) in [
        ("passwordSecretRef", &redis.password_secret_ref),
        ("usernameSecretRef", &redis.username_secret_ref),
    ] {
        if let Some(reference) = reference
            && (reference.name.is_empty() || reference.key.is_empty())
        {
            return Err(format!("locator.redis.{field} needs a name and a key"));
        }
    }
    if let Some(ca) = &redis.ca {
        if !redis.url.starts_with("rediss://") {
            return Err("locator.redis.ca needs a rediss:// URL".to_owned());
        }
        if ca.secret_name.is_some() == ca.config_map_name.is_some() {
            return Err("a CA bundle names exactly one of secretName and configMapName".to_owned());
        }
        if ca.key.is_empty() {
            return Err("locator.redis.ca.key must not be empty".to_owned());
        }
    }
    Ok(())
}

/// The name of the managed Redis's Secret.
pub fn auth_secret_name(cluster: &str) -> String {
    format!("{cluster}-{REDIS_AUTH_SUFFIX}")
}

/// `SWITCHYARD_LOCATOR`: the spec's URL, or the managed Redis's Service.
pub fn url(cluster: &str, namespace: &str, spec: &LocatorSpec) -> String {
    match &spec.redis {
        Some(redis) => redis.url.clone(),
        None => format!(
            "redis://{cluster}-redis.{namespace}.svc:{}",
            crate::children::REDIS_PORT
        ),
    }
}

/// `SWITCHYARD_LOCATOR_PREFIX`: the spec's, default `switchyard:NAME`.
pub fn prefix(cluster: &str, spec: &LocatorSpec) -> String {
    spec.redis
        .as_ref()
        .and_then(|redis| redis.key_prefix.clone())
        .unwrap_or_else(|| format!("switchyard:{cluster}"))
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    }
}

/// The credentials and CA of gates and nodes: the managed Redis's password, or what the spec names.
pub fn auth_env(cluster: &str, spec: &LocatorSpec) -> Vec<EnvVar> {
    let Some(redis) = &spec.redis else {
        return vec![secret_env(
            env::LOCATOR_PASSWORD,
            &auth_secret_name(cluster),
            REDIS_PASSWORD_KEY,
        )];
    };
    let from = |name: &str, reference: &Option<SecretKeyRef>| {
        reference
            .as_ref()
            .map(|reference| secret_env(name, &reference.name, &reference.key))
    };
    let mut vars: Vec<EnvVar> = [
        from(env::LOCATOR_USERNAME, &redis.username_secret_ref),
        from(env::LOCATOR_PASSWORD, &redis.password_secret_ref),
    ]
    .into_iter()
    .flatten()
    .collect();
    if redis.ca.is_some() {
        vars.push(EnvVar {
            name: env::LOCATOR_CA.to_owned(),
            value: Some(format!("{LOCATOR_CA_DIR}/{CA_FILE}")),
            value_from: None,
        });
    }
    vars
}

/// The CA bundle's volume and mount for gate and node pods, when the spec names one.
pub fn ca_volume(spec: &LocatorSpec) -> Option<(Volume, VolumeMount)> {
    let ca = spec.redis.as_ref()?.ca.as_ref()?;
    let items = Some(vec![KeyToPath {
        key: ca.key.clone(),
        path: CA_FILE.to_owned(),
        mode: None,
        ..Default::default()
    }]);
    let mut volume = Volume {
        name: LOCATOR_CA_VOLUME.to_owned(),
        ..Default::default()
    };
    if let Some(secret) = &ca.secret_name {
        volume.secret = Some(SecretVolumeSource {
            secret_name: Some(secret.clone()),
            items,
            optional: Some(false),
            default_mode: Some(0o444),
            ..Default::default()
        });
    } else if let Some(config_map) = &ca.config_map_name {
        volume.config_map = Some(ConfigMapVolumeSource {
            name: config_map.clone(),
            items,
            optional: Some(false),
            default_mode: Some(0o444),
            ..Default::default()
        });
    }
    let mount = VolumeMount {
        name: LOCATOR_CA_VOLUME.to_owned(),
        mount_path: LOCATOR_CA_DIR.to_owned(),
        read_only: Some(true),
        ..Default::default()
    };
    Some((volume, mount))
}

/// The managed Redis's arguments: its configuration file (the password) first, then no persistence and
/// protected mode on (which also stops the official image's entrypoint from turning it off).
pub fn managed_redis_args() -> Vec<String> {
    [
        &format!("{REDIS_CONF_DIR}/{REDIS_CONF_KEY}"),
        "--port",
        &crate::children::REDIS_PORT.to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "yes",
    ]
    .map(|arg| arg.to_owned())
    .to_vec()
}

/// The volume of the managed Redis's configuration file, from its Secret; readable by the Redis user's
/// group (the pod's `fsGroup`) only.
pub fn managed_redis_conf_volume(cluster: &str) -> (Volume, VolumeMount) {
    let volume = Volume {
        name: "config".to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(auth_secret_name(cluster)),
            items: Some(vec![KeyToPath {
                key: REDIS_CONF_KEY.to_owned(),
                path: REDIS_CONF_KEY.to_owned(),
                mode: None,
                ..Default::default()
            }]),
            optional: Some(false),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mount = VolumeMount {
        name: "config".to_owned(),
        mount_path: REDIS_CONF_DIR.to_owned(),
        read_only: Some(true),
        ..Default::default()
    };
    (volume, mount)
}

/// A fresh random password: alphanumerics only, so it needs no quoting in `redis.conf` or a URL.
pub fn generate_password() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(PASSWORD_CHARS)
        .map(char::from)
        .collect()
}

/// The managed Redis's Secret with `password`: the password for gates and nodes, and the `redis.conf`
/// that makes Redis require it. `meta` names it and makes the GameCluster its owner.
pub fn auth_secret(meta: ObjectMeta, password: &str) -> Secret {
    Secret {
        metadata: meta,
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            (
                REDIS_PASSWORD_KEY.to_owned(),
                ByteString(password.as_bytes().to_vec()),
            ),
            (
                REDIS_CONF_KEY.to_owned(),
                ByteString(format!("requirepass {password}\nprotected-mode yes\n").into_bytes()),
            ),
        ])),
        immutable: Some(true),
        ..Default::default()
    }
}
