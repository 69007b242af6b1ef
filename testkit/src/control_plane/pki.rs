//! The control plane's keys and certificates (ECDSA P-256, made with rcgen: no openssl needed) and the
//! kubeconfig of each client identity.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};

use super::User;
use crate::Error;

/// The PEM files in one directory: `ca.crt`/`ca.key`, `apiserver.crt`/`.key`, `<user>.crt`/`.key` for
/// each client identity, and the service-account key pair `sa.key`/`sa.pub`.
#[derive(Debug, Clone)]
pub(super) struct Pki {
    pub(super) dir: PathBuf,
}

impl Pki {
    /// Generates a CA, the API server's serving certificate (for `address`, `service_ip`, loopback and
    /// the `kubernetes` Service's names), one client certificate per user, and the service-account key.
    pub(super) fn generate(
        dir: &Path,
        address: IpAddr,
        service_ip: &str,
        users: &[User],
    ) -> Result<Pki, Error> {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::new())?;
        ca_params.distinguished_name = name(None, "switchyard-test-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        write(&dir.join("ca.crt"), ca_cert.pem().as_bytes())?;
        write(&dir.join("ca.key"), ca_key.serialize_pem().as_bytes())?;
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |file: &str,
                    organization: Option<&str>,
                    common_name: &str,
                    sans: Vec<String>,
                    usage: ExtendedKeyUsagePurpose|
         -> Result<(), Error> {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(sans)?;
            params.distinguished_name = name(organization, common_name);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer)?;
            write(&dir.join(format!("{file}.crt")), cert.pem().as_bytes())?;
            write(&dir.join(format!("{file}.key")), key.serialize_pem().as_bytes())
        };
        let mut sans: Vec<String> = vec![address.to_string(), service_ip.to_owned()];
        for name in [
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ] {
            if !sans.iter().any(|san| san == name) {
                sans.push(name.to_owned());
            }
        }
        leaf(
            "apiserver",
            None,
            "kube-apiserver",
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        for user in users {
            leaf(
                &user.file,
                user.organization.as_deref(),
                &user.common_name,
                Vec::new(),
                ExtendedKeyUsagePurpose::ClientAuth,
            )?;
        }
        let sa = KeyPair::generate()?;
        write(&dir.join("sa.key"), sa.serialize_pem().as_bytes())?;
        write(&dir.join("sa.pub"), sa.public_key_pem().as_bytes())?;
        Ok(Pki {
            dir: dir.to_path_buf(),
        })
    }

    /// A file of the PKI directory.
    pub(super) fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `<dir>/<user.file>.kubeconfig` (JSON, which every kubeconfig reader accepts) with file
    /// references to the CA and the user's certificate, namespace `default`.
    pub(super) fn write_kubeconfig(&self, dir: &Path, server: &str, user: &User) -> Result<PathBuf, Error> {
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority": self.file("ca.crt")}}],
            "users": [{"name": user.file, "user": {
                "client-certificate": self.file(&format!("{}.crt", user.file)),
                "client-key": self.file(&format!("{}.key", user.file)),
            }}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": user.file, "namespace": "default"}}],
            "current-context": "test",
        });
        let path = dir.join(format!("{}.kubeconfig", user.file));
        write(&path, config.to_string().as_bytes())?;
        Ok(path)
    }
}

fn write(path: &Path, contents: &[u8]) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(Error::io(format!("write {}", path.display())))
}

fn name(organization: Option<&str>, common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    if let Some(organization) = organization {
        name.push(DnType::OrganizationName, organization);
    }
    name.push(DnType::CommonName, common_name);
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TempDir;

    #[test]
    fn pki_and_kubeconfig_files() {
        let dir = TempDir::new("pki");
        let users = [User::admin(), User::new("node", "switchyard-node")];
        let pki = Pki::generate(
            &dir.path().join("pki"),
            IpAddr::from([10, 244, 0, 1]),
            "10.96.0.1",
            &users,
        )
        .expect("pki");
        for file in [
            "ca.crt",
            "apiserver.crt",
            "apiserver.key",
            "admin.crt",
            "node.key",
            "sa.key",
            "sa.pub",
        ] {
            let text = std::fs::read_to_string(pki.file(file)).expect("pem");
            assert!(text.starts_with("-----BEGIN "), "{file}: {text}");
        }
        let path = pki
            .write_kubeconfig(dir.path(), "https://10.244.0.1:6443", &users[1])
            .expect("kubeconfig");
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
        assert_eq!(config["current-context"], "test");
        assert_eq!(config["users"][0]["name"], "node");
    }
}
