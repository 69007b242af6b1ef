//! The link certificates: minted into Secrets, mounted, renewed before expiry and recreated when deleted.

use super::*;

fn text(data: &BTreeMap<String, k8s_openapi::ByteString>, key: &str) -> String {
    String::from_utf8(data[key].0.clone()).unwrap_or_else(|_| panic!("{key} is UTF-8"))
}

/// Replaces a leaf Secret's certificate and key (as a person or a stale writer might).
async fn replace_leaf(secrets: &Api<Secret>, name: &str, pem: &link_certs::Pem) {
    let patch = serde_json::json!({"stringData": {"tls.crt": pem.cert, "tls.key": pem.key}});
    secrets
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("leaf replaced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run scripts/test.sh (it builds e2e/toolchain first) or cargo test --test operator_apiserver -- --ignored"]
async fn link_certificates_are_minted_mounted_renewed_and_recreated() {
    let (plane, client, ns) = setup("links").await;
    let operator = Operator::start(plane, &ns, "op-1").await;
    let cluster = create_cluster(&client, &ns, "arena", GameClusterSpec::default()).await;
    let uid = cluster.uid().expect("uid");
    let link_selector = "app.kubernetes.io/instance=arena,app.kubernetes.io/component=link";
    let link_secrets = eventually("the three link Secrets exist", WAIT, || async {
        let names = names::<Secret>(&client, &ns, link_selector).await;
        (names.len() == 3).then_some(names)
    })
    .await;
    assert_eq!(
        link_secrets,
        ["arena-link-ca", "arena-link-gate-tls", "arena-link-node-tls"]
    );
    for name in &link_secrets {
        owned_by::<Secret>(&client, &ns, name, &uid).await;
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let ca_secret = secrets.get("arena-link-ca").await.expect("CA Secret");
    assert_eq!(ca_secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let ca_data = ca_secret.data.clone().expect("CA data");
    let ca_pem = text(&ca_data, "tls.crt");
    // What the API server holds is what the processes accept, each leaf for its role only.
    for (name, role, other) in [
        ("arena-link-gate-tls", LinkRole::Gate, LinkRole::Node),
        ("arena-link-node-tls", LinkRole::Node, LinkRole::Gate),
    ] {
        let data = secret_data(&secrets, name).await.expect("leaf data");
        assert_eq!(text(&data, "ca.crt"), ca_pem, "{name} carries the CA");
        let check = |role| {
            check_pem(
                data["ca.crt"].0.as_slice(),
                data["tls.crt"].0.as_slice(),
                data["tls.key"].0.as_slice(),
                role,
                SystemTime::now(),
            )
        };
        check(role).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert!(check(other).is_err(), "{name} also passes as the other role");
    }

    // Gates and nodes mount their own leaf, whole and read-only, and get the contract's variables; no pod
    // mounts the CA.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let selector = instance("arena");
    let all = eventually("gate, node and Redis pods created", WAIT, || async {
        let list = pods.list(&ListParams::default().labels(&selector)).await.ok()?;
        (list.items.len() == 5).then_some(list.items)
    })
    .await;
    for pod in &all {
        let component = pod.labels()["app.kubernetes.io/component"].clone();
        let spec = pod.spec.clone().expect("pod spec");
        let secrets_mounted: Vec<String> = spec
            .volumes
            .iter()
            .flatten()
            .filter_map(|volume| volume.secret.as_ref()?.secret_name.clone())
            .collect();
        let rendered = serde_json::to_string(&spec).expect("JSON");
        assert!(
            !rendered.contains("arena-link-ca"),
            "{} refers to the CA: {rendered}",
            pod.name_any()
        );
        let expected: &[&str] = match component.as_str() {
            "gate" => &["arena-link-gate-tls"],
            "node" => &["arena-link-node-tls"],
            _ => &[],
        };
        let link: Vec<&String> = secrets_mounted
            .iter()
            .filter(|name| name.contains("-link-"))
            .collect();
        assert_eq!(link, expected, "{}", pod.name_any());
        if component == "redis" {
            continue;
        }
        let container = &spec.containers[0];
        let mount = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|mount| mount.name == "link-tls")
            .expect("the link mount");
        assert_eq!(mount.mount_path, "/etc/switchyard/link-tls");
        assert_eq!((mount.read_only, mount.sub_path.as_deref()), (Some(true), None));
        let env: BTreeMap<String, String> = container
            .env
            .iter()
            .flatten()
            .filter_map(|var| Some((var.name.clone(), var.value.clone()?)))
            .collect();
        for (name, file) in [
            ("SWITCHYARD_LINK_TLS_CA", "ca.crt"),
            ("SWITCHYARD_LINK_TLS_CERT", "tls.crt"),
            ("SWITCHYARD_LINK_TLS_KEY", "tls.key"),
        ] {
            assert_eq!(env[name], format!("/etc/switchyard/link-tls/{file}"));
        }
    }

    // Every pod ready: the cluster is stable, so the operator's next periodic look is minutes away.
    eventually("Ready=True once every pod is ready", WAIT, || async {
        mark_pods_ready(&client, &ns, &selector).await;
        let (_, status) = status(&client, &ns, "arena").await;
        (condition(&status, "Ready").map(|c| c.0).as_deref() == Some("True")).then_some(())
    })
    .await;
    // A gate leaf that is due for renewal in a few seconds (an hour-long one, most of it used): kept until
    // then, which only the requeue at its renewal time can end (nothing else changes), then renewed.
    let ca = LinkCa::from_secret(&ca_data, SystemTime::now()).expect("the stored CA is usable");
    let hour = Duration::from_secs(3600);
    let third = (hour + link_certs::BACKDATE) / 3;
    let soon = ca
        .issue_valid_for(
            Leaf::Gate,
            "arena",
            SystemTime::now() + Duration::from_secs(8) + third - hour,
            hour,
        )
        .expect("short-lived leaf");
    replace_leaf(&secrets, "arena-link-gate-tls", &soon).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = secret_data(&secrets, "arena-link-gate-tls")
        .await
        .expect("gate leaf");
    assert_eq!(text(&kept, "tls.crt"), soon.cert, "renewed before its time");
    let renewed = eventually("the gate leaf renewed at its time", WAIT, || async {
        let data = secret_data(&secrets, "arena-link-gate-tls").await?;
        (text(&data, "tls.crt") != soon.cert).then_some(data)
    })
    .await;
    match check_leaf(&ca, Some(&renewed), Leaf::Gate, SystemTime::now()) {
        LeafCheck::Keep { renew_at } => assert!(
            renew_at > SystemTime::now() + Duration::from_secs(15 * 24 * 3600),
            "a full-length leaf"
        ),
        other => panic!("the renewed leaf is not good: {other:?}"),
    }
    // A node leaf already past its renewal time (a minute past; still valid for 20 more): renewed at once.
    let due = ca
        .issue_valid_for(
            Leaf::Node,
            "arena",
            SystemTime::now() - (hour - third) - Duration::from_secs(60),
            hour,
        )
        .expect("due leaf");
    assert_eq!(
        check_leaf(
            &ca,
            Some(&link_certs::leaf_secret_data(&due, &ca)),
            Leaf::Node,
            SystemTime::now()
        ),
        LeafCheck::Issue(link_certs::Issue::Due)
    );
    replace_leaf(&secrets, "arena-link-node-tls", &due).await;
    eventually("the node leaf renewed", WAIT, || async {
        let data = secret_data(&secrets, "arena-link-node-tls").await?;
        (text(&data, "tls.crt") != due.cert
            && matches!(
                check_leaf(&ca, Some(&data), Leaf::Node, SystemTime::now()),
                LeafCheck::Keep { .. }
            ))
        .then_some(())
    })
    .await;
    // The CA stayed as it was.
    let ca_after = secrets.get("arena-link-ca").await.expect("CA Secret");
    assert_eq!(ca_after.metadata.uid, ca_secret.metadata.uid);
    assert_eq!(ca_after.data, ca_secret.data, "the CA was not replaced");

    // A deleted leaf is made again, by the same CA.
    let old_uid = secrets
        .get("arena-link-node-tls")
        .await
        .expect("node leaf")
        .metadata
        .uid;
    secrets
        .delete("arena-link-node-tls", &DeleteParams::default())
        .await
        .expect("deleted");
    let again = eventually("the deleted node leaf recreated", WAIT, || async {
        let secret = secrets.get_opt("arena-link-node-tls").await.ok()??;
        (secret.metadata.uid != old_uid).then_some(secret)
    })
    .await;
    assert!(matches!(
        check_leaf(&ca, again.data.as_ref(), Leaf::Node, SystemTime::now()),
        LeafCheck::Keep { .. }
    ));
    let exposed = operator.metrics().await;
    for (kind, reason) in [
        ("ca", "missing"),
        ("gate", "missing"),
        ("gate", "renewal"),
        ("node", "renewal"),
    ] {
        let filter = format!("kind=\"{kind}\",reason=\"{reason}\"");
        assert!(
            metric(
                &exposed,
                "switchyard_operator_link_certificates_issued_total",
                &filter
            )
            .unwrap_or(0.0)
                >= 1.0,
            "{filter}:\n{exposed}"
        );
    }
    assert!(
        metric(
            &exposed,
            "switchyard_operator_link_certificates_issued_total",
            "kind=\"node\",reason=\"missing\""
        )
        .unwrap_or(0.0)
            >= 2.0,
        "the node leaf made at the start and again after its deletion"
    );

    // A CA Secret the GameCluster does not own is neither used nor overwritten: Degraded, counted, no
    // crash loop, and nothing else of that cluster is made.
    let foreign = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("rogue-link-ca".into()),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            "tls.crt".to_owned(),
            k8s_openapi::ByteString(b"not a CA".to_vec()),
        )])),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &foreign)
        .await
        .expect("foreign Secret");
    create_cluster(&client, &ns, "rogue", GameClusterSpec::default()).await;
    let degraded = eventually("the rogue cluster Degraded", WAIT, || async {
        let (_, status) = status(&client, &ns, "rogue").await;
        let degraded = condition(&status, "Degraded")?;
        (degraded.0 == "True").then_some(degraded)
    })
    .await;
    assert_eq!(degraded.1, "LinkCertificates");
    assert!(
        names::<Deployment>(&client, &ns, &instance("rogue"))
            .await
            .is_empty()
    );
    let still = secrets.get("rogue-link-ca").await.expect("foreign Secret");
    assert_eq!(still.data, foreign.data, "the foreign Secret was left alone");
    let exposed = operator.metrics().await;
    assert!(
        metric(
            &exposed,
            "switchyard_operator_link_certificate_errors_total",
            "reason=\"ca_foreign\""
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{exposed}"
    );
    // Looked at again (a change of the GameCluster): counted again, logged once.
    let clusters: Api<GameCluster> = Api::namespaced(client.clone(), &ns);
    let touch = serde_json::json!({"metadata": {"annotations": {"example.com/touched": "1"}}});
    clusters
        .patch("rogue", &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .expect("annotated");
    eventually("the foreign CA counted twice", WAIT, || async {
        let exposed = operator.metrics().await;
        (metric(
            &exposed,
            "switchyard_operator_link_certificate_errors_total",
            "reason=\"ca_foreign\"",
        )
        .unwrap_or(0.0)
            >= 2.0)
            .then_some(())
    })
    .await;
    let log = operator.log_text();
    assert_eq!(
        log.matches("link certificates cannot be kept").count(),
        1,
        "{log}"
    );
    operator.stop().await;
}
