//! The kubelet's resolution rules on a small hand-written manifest.

use super::*;

const SAMPLE: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg-abc}
data: {A: "1", URL: "https://cp:7443"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: w}
spec:
  template:
    spec:
      terminationGracePeriodSeconds: 45
      containers:
        - name: w
          command: ["/usr/local/bin/annex-worker"]
          args: ["--worker-id", "$(POD_NAME)"]
          envFrom: [{configMapRef: {name: cfg-abc}}]
          env:
            - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
            - {name: ADDR, value: "$(POD_NAME).w.ns.svc:7444"}
            - {name: LISTEN, value: "0.0.0.0:7444"}
            - {name: LATER, value: "$(NOT_YET)$$(x)"}
            - {name: NOT_YET, value: "y"}
            - {name: KEY, valueFrom: {secretKeyRef: {name: s, key: k}}}
            - {name: FILE, value: /etc/tls/ca.crt}
          ports: [{name: grpc, containerPort: 7444}, {name: admin, containerPort: 9091}]
          readinessProbe: {httpGet: {path: /ready, port: admin}, periodSeconds: 2}
          volumeMounts: [{name: tls, mountPath: /etc/tls}]
      volumes: [{name: tls, secret: {secretName: w-tls}}]
"#;

fn inputs() -> PodInputs {
    PodInputs {
        secrets: [(("s".to_owned(), "k".to_owned()), "secret".to_owned())].into(),
        pod_name: "w-1".into(),
        namespace: "ns".into(),
        pod_ip: "10.0.0.1".into(),
    }
}

#[test]
fn a_container_resolves_as_the_kubelet_does() {
    let m = Manifests::parse(SAMPLE).expect("parse");
    let p = m.process("w", &inputs()).expect("process");
    assert_eq!(p.binary(), Some("annex-worker"));
    assert_eq!(p.argv[1..], ["--worker-id".to_owned(), "w-1".to_owned()]);
    assert_eq!(p.env["A"], "1");
    assert_eq!(p.env["ADDR"], "w-1.w.ns.svc:7444");
    // Only names defined before a value expand; `$$` is a literal `$`.
    assert_eq!(p.env["LATER"], "$(NOT_YET)$(x)");
    assert_eq!(p.env["KEY"], "secret");
    assert_eq!(p.unresolved(), vec!["LATER=$(NOT_YET)$(x)".to_owned()]);
    let ready = p.readiness.as_ref().expect("readiness");
    assert_eq!((ready.path.as_str(), ready.port), ("/ready", 9091));
    assert_eq!(p.termination_grace, Duration::from_secs(45));
    assert_eq!(
        p.mounts[Path::new("/etc/tls")],
        MountSource::Secret {
            name: "w-tls".into(),
            items: vec![]
        }
    );
}

#[test]
fn mounts_and_listeners_move_to_test_places() {
    let m = Manifests::parse(SAMPLE).expect("parse");
    let mut p = m.process("w", &inputs()).expect("process");
    let moves = [
        (PathBuf::from("/etc/tls"), PathBuf::from("/tmp/x/tls")),
        (PathBuf::from("/tmp"), PathBuf::from("/tmp/x/tmp")),
    ]
    .into();
    p.remap_mounts(&moves);
    assert_eq!(p.env["FILE"], "/tmp/x/tls/ca.crt");
    let moved = p.rebind(|port| format!("127.0.0.1:{}", port + 1));
    assert_eq!(p.env["LISTEN"], "127.0.0.1:7445");
    // A DNS name with a port is an address to dial, not a listener.
    assert_eq!(p.env["ADDR"], "w-1.w.ns.svc:7444");
    assert_eq!(moved.get(&7444).map(String::as_str), Some("127.0.0.1:7445"));
}

#[test]
fn a_missing_secret_value_is_an_error() {
    let m = Manifests::parse(SAMPLE).expect("parse");
    let err = m
        .process("w", &PodInputs::default())
        .expect_err("no secret value");
    assert!(err.to_string().contains("Secret s/k"), "{err}");
}
