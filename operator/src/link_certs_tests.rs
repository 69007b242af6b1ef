//! Unit tests of the link certificates: what is minted is what gates and nodes accept, and the renewal
//! decision follows the certificate's own validity.

#![allow(clippy::unwrap_used)]

use super::*;

fn now() -> SystemTime {
    SystemTime::now()
}

fn ca() -> (Pem, LinkCa) {
    new_ca("arena", "games", now()).unwrap()
}

fn stored(leaf: &Pem, ca: &LinkCa) -> BTreeMap<String, ByteString> {
    leaf_secret_data(leaf, ca)
}

#[test]
fn minted_leaves_are_what_the_processes_accept_for_their_role_only() {
    let (_, ca) = ca();
    let gate = mint_leaf(&ca, Leaf::Gate, "arena", now()).unwrap();
    let node = mint_leaf(&ca, Leaf::Node, "arena", now()).unwrap();
    let check = |pem: &Pem, role| {
        check_pem(
            ca.cert_pem().as_bytes(),
            pem.cert.as_bytes(),
            pem.key.as_bytes(),
            role,
            now(),
        )
    };
    check(&gate, LinkRole::Gate).unwrap();
    check(&node, LinkRole::Node).unwrap();
    // The purposes the processes check: a gate certificate cannot serve as a node's, nor the reverse.
    assert!(check(&gate, LinkRole::Node).is_err());
    assert!(check(&node, LinkRole::Gate).is_err());
    // Two minted CAs are two trust domains.
    let (_, other) = new_ca("arena", "elsewhere", now()).unwrap();
    let foreign = mint_leaf(&other, Leaf::Gate, "arena", now()).unwrap();
    assert!(check(&foreign, LinkRole::Gate).is_err());
}

#[test]
fn validity_is_backdated_and_lasts_the_lifetimes() {
    let at = now();
    let (ca_pem, ca) = new_ca("arena", "games", at).unwrap();
    let ca_info = cert_info(&ca_pem.cert).unwrap();
    let leaf = mint_leaf(&ca, Leaf::Node, "arena", at).unwrap();
    let leaf_info = cert_info(&leaf.cert).unwrap();
    let seconds = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(seconds(ca_info.not_before), seconds(at - BACKDATE));
    assert_eq!(seconds(ca_info.not_after), seconds(at + CA_LIFETIME));
    assert_eq!(seconds(leaf_info.not_before), seconds(at - BACKDATE));
    assert_eq!(seconds(leaf_info.not_after), seconds(at + LEAF_LIFETIME));
    assert!(ca_info.is_ca && !leaf_info.is_ca);
}

#[test]
fn renewal_is_due_when_a_third_of_the_lifetime_is_left() {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let end = start + Duration::from_secs(30 * 24 * 3600);
    assert_eq!(
        renewal_time(start, end),
        start + Duration::from_secs(20 * 24 * 3600)
    );
    // A malformed validity (ends before it starts) is due at once.
    assert_eq!(renewal_time(end, start), start);
}

#[test]
fn a_fresh_leaf_is_kept_until_its_renewal_time_then_renewed() {
    let (_, ca) = ca();
    let at = now();
    let leaf = mint_leaf(&ca, Leaf::Gate, "arena", at).unwrap();
    let data = stored(&leaf, &ca);
    let LeafCheck::Keep { renew_at } = check_leaf(&ca, Some(&data), Leaf::Gate, at) else {
        panic!("a fresh leaf is kept");
    };
    let seconds = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let lifetime = LEAF_LIFETIME + BACKDATE;
    assert_eq!(
        seconds(renew_at),
        seconds(at - BACKDATE + lifetime - lifetime / 3)
    );
    assert_eq!(
        check_leaf(&ca, Some(&data), Leaf::Gate, renew_at),
        LeafCheck::Issue(Issue::Due)
    );
    // A short-lived leaf (an hour, plus the backdating; 45 minutes of it used) is in its last third: due.
    let short = ca
        .issue_valid_for(Leaf::Gate, "arena", at, Duration::from_secs(3600))
        .unwrap();
    assert_eq!(
        check_leaf(
            &ca,
            Some(&stored(&short, &ca)),
            Leaf::Gate,
            at + Duration::from_secs(45 * 60)
        ),
        LeafCheck::Issue(Issue::Due)
    );
}

#[test]
fn missing_malformed_foreign_or_wrong_role_leaves_are_reissued() {
    let (_, ca) = ca();
    let at = now();
    assert_eq!(
        check_leaf(&ca, None, Leaf::Node, at),
        LeafCheck::Issue(Issue::Missing)
    );
    let node = mint_leaf(&ca, Leaf::Node, "arena", at).unwrap();
    let good = stored(&node, &ca);
    assert!(matches!(
        check_leaf(&ca, Some(&good), Leaf::Node, at),
        LeafCheck::Keep { .. }
    ));
    // The node's leaf in the gates' Secret: the wrong purpose.
    assert!(matches!(
        check_leaf(&ca, Some(&good), Leaf::Gate, at),
        LeafCheck::Issue(Issue::Invalid(_))
    ));
    let mut broken = good.clone();
    broken.insert(KEY_KEY.to_owned(), ByteString(b"not a key".to_vec()));
    assert!(matches!(
        check_leaf(&ca, Some(&broken), Leaf::Node, at),
        LeafCheck::Issue(Issue::Invalid(_))
    ));
    // Another leaf's key: the key does not belong to the certificate.
    let other = mint_leaf(&ca, Leaf::Node, "arena", at).unwrap();
    let mut mismatched = good.clone();
    mismatched.insert(KEY_KEY.to_owned(), ByteString(other.key.into_bytes()));
    assert!(matches!(
        check_leaf(&ca, Some(&mismatched), Leaf::Node, at),
        LeafCheck::Issue(Issue::Invalid(_))
    ));
    let mut missing = good.clone();
    missing.remove(CERT_KEY);
    assert!(matches!(
        check_leaf(&ca, Some(&missing), Leaf::Node, at),
        LeafCheck::Issue(Issue::Invalid(why)) if why.contains("tls.crt")
    ));
    let mut huge = good.clone();
    huge.insert(CERT_KEY.to_owned(), ByteString(vec![b'A'; MAX_PEM_BYTES + 1]));
    assert!(matches!(
        check_leaf(&ca, Some(&huge), Leaf::Node, at),
        LeafCheck::Issue(Issue::Invalid(why)) if why.contains("larger")
    ));
    // Issued by another CA, though stored with the current CA's certificate: does not verify.
    let (_, other_ca) = new_ca("arena", "games", at).unwrap();
    let foreign = mint_leaf(&other_ca, Leaf::Node, "arena", at).unwrap();
    assert!(matches!(
        check_leaf(&ca, Some(&stored(&foreign, &ca)), Leaf::Node, at),
        LeafCheck::Issue(Issue::Invalid(_))
    ));
    // Stored with the previous CA's certificate: the CA was replaced.
    assert_eq!(
        check_leaf(&ca, Some(&stored(&foreign, &other_ca)), Leaf::Node, at),
        LeafCheck::Issue(Issue::CaChanged)
    );
    // Expired.
    assert!(matches!(
        check_leaf(
            &ca,
            Some(&good),
            Leaf::Node,
            at + LEAF_LIFETIME + Duration::from_secs(60)
        ),
        LeafCheck::Issue(Issue::Invalid(_))
    ));
}

#[test]
fn a_malformed_ca_secret_is_an_error_naming_the_fault() {
    let at = now();
    let (pem, _) = ca();
    let data = ca_secret_data(&pem);
    assert!(LinkCa::from_secret(&data, at).is_ok());
    let mut no_key = data.clone();
    no_key.remove(KEY_KEY);
    assert_eq!(
        LinkCa::from_secret(&no_key, at).unwrap_err(),
        CaError::Missing("tls.key")
    );
    let mut garbage = data.clone();
    garbage.insert(
        CERT_KEY.to_owned(),
        ByteString(b"-----BEGIN CERTIFICATE-----\nAAAA\n".to_vec()),
    );
    assert!(matches!(LinkCa::from_secret(&garbage, at), Err(CaError::Cert(_))));
    let mut binary = data.clone();
    binary.insert(KEY_KEY.to_owned(), ByteString(vec![0xff, 0xfe]));
    assert_eq!(
        LinkCa::from_secret(&binary, at).unwrap_err(),
        CaError::NotText("tls.key")
    );
    let mut huge = data.clone();
    huge.insert(CERT_KEY.to_owned(), ByteString(vec![b'A'; MAX_PEM_BYTES + 1]));
    assert_eq!(
        LinkCa::from_secret(&huge, at).unwrap_err(),
        CaError::TooLarge("tls.crt")
    );
    // Another CA's key with this certificate: it would issue leaves nobody accepts.
    let (other, _) = ca();
    let mut mismatched = data.clone();
    mismatched.insert(KEY_KEY.to_owned(), ByteString(other.key.into_bytes()));
    assert!(matches!(
        LinkCa::from_secret(&mismatched, at),
        Err(CaError::Unusable(_))
    ));
    // A leaf is no CA.
    let (_, ca) = ca();
    let leaf = mint_leaf(&ca, Leaf::Node, "arena", at).unwrap();
    assert!(matches!(
        LinkCa::from_secret(&ca_secret_data(&leaf), at),
        Err(CaError::Cert(_))
    ));
    // A CA that expires within a leaf's lifetime.
    assert!(matches!(
        LinkCa::from_secret(&data, at + CA_LIFETIME - Duration::from_secs(3600)),
        Err(CaError::Expiring(_))
    ));
}

#[test]
fn secret_names_follow_the_cluster() {
    assert_eq!(ca_secret_name("arena"), "arena-link-ca");
    assert_eq!(Leaf::Gate.secret_name("arena"), "arena-link-gate-tls");
    assert_eq!(Leaf::Node.secret_name("arena"), "arena-link-node-tls");
}
