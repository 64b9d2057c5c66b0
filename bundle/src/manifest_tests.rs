use super::*;
use proptest::prelude::*;
use serde_json::json;

/// Alga's scheduler sample manifest, plus the publisher Annex requires.
fn sample() -> Value {
    json!({
        "name": "com.alga.sample.scheduler-demo",
        "publisher": "Alga",
        "version": "0.1.0",
        "runtime": "wasm-js@1",
        "capabilities": ["cap:scheduler.manage", "cap:log.emit", "cap:context.read"],
        "ui": {"type": "iframe", "entry": "ui/index.html", "hooks": {"appMenu": {"label": "Scheduler Demo"}}},
        "api": {"endpoints": [
            {"method": "GET", "path": "/api/status", "handler": "dist/main", "schedulable": true},
            {"method": "DELETE", "path": "/api/schedules/:id", "handler": "dist/main"}
        ]},
        "assets": ["ui/**/*"]
    })
}

/// `sample()` with `edits` applied: `null` removes a key, anything else replaces it.
fn with(edits: Value) -> Value {
    let mut m = sample();
    if let (Value::Object(obj), Value::Object(edits)) = (&mut m, edits) {
        for (k, v) in edits {
            if v.is_null() {
                obj.remove(&k);
            } else {
                obj.insert(k, v);
            }
        }
    }
    m
}

fn parse(v: &Value) -> Result<Manifest, ManifestError> {
    Manifest::parse(v.to_string().as_bytes())
}

/// Asserts that `input` is rejected with exactly the issue paths in `want`, each message
/// containing its fragment.
fn check_issues(input: Value, want: &[(&str, &str)]) {
    let err = parse(&input).expect_err(&format!("should be rejected: {input}"));
    let ManifestError::Invalid(issues) = &err else {
        panic!("expected Invalid, got {err:?}");
    };
    let got: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    let want_paths: Vec<&str> = want.iter().map(|(p, _)| *p).collect();
    assert_eq!(got, want_paths, "issue paths for {input}: {issues:?}");
    for (issue, (_, fragment)) in issues.iter().zip(want) {
        assert!(
            issue.message.contains(fragment),
            "{:?} should contain {fragment:?}",
            issue.message
        );
    }
}

#[test]
fn sample_parses_and_normalises() {
    let m = parse(&sample()).expect("sample is valid");
    assert_eq!(m.name, "com.alga.sample.scheduler-demo");
    assert_eq!(m.publisher, "Alga");
    assert_eq!(m.version, VersionSpec::Exact("0.1.0".into()));
    assert_eq!(m.version_string(), Some("0.1.0"));
    assert_eq!(m.runtime, "wasm-js@1");
    assert_eq!(m.world, World::Alga);
    assert_eq!(m.capabilities.len(), 3);
    assert_eq!(m.main_entry(), "ui/index.html");
    assert_eq!(
        m.ui,
        Some(UiSpec {
            entry: "ui/index.html".into(),
            app_menu_label: Some("Scheduler Demo".into()),
            client_portal_menu_label: None,
        })
    );
    assert_eq!(
        m.endpoints,
        vec![
            Endpoint {
                method: "GET".into(),
                path: "/api/status".into(),
                handler: "dist/main".into()
            },
            Endpoint {
                method: "DELETE".into(),
                path: "/api/schedules/:id".into(),
                handler: "dist/main".into()
            },
        ]
    );
    assert_eq!(m.assets, vec!["ui/**/*".to_string()]);
    assert!(m.precompiled.is_empty());
}

#[test]
fn minimal_manifest_has_defaults() {
    let m =
        parse(&json!({"name": "n", "publisher": "p", "version": "1.0.0", "runtime": "wasm-js@1"}))
            .expect("minimal manifest is valid");
    assert_eq!(m.main_entry(), "main");
    assert!(m.ui.is_none() && m.endpoints.is_empty() && m.capabilities.is_empty());
}

#[test]
fn structural_errors() {
    assert!(matches!(
        Manifest::parse(b"{not json"),
        Err(ManifestError::InvalidJson(_))
    ));
    assert!(matches!(
        Manifest::parse(&[0xff, 0xfe]),
        Err(ManifestError::InvalidJson(_))
    ));
    for input in ["[]", "null", "\"x\"", "3"] {
        let err = Manifest::parse(input.as_bytes()).expect_err(input);
        assert_eq!(err, ManifestError::NotAnObject);
        assert_eq!(err.issues()[0].path, "$");
    }
}

#[test]
fn top_level_fields() {
    check_issues(
        with(json!({"entry": "x", "sbom": {}, "events": []})),
        &[
            ("entry", "Unknown top-level field 'entry'"),
            ("events", "Unknown top-level field 'events'"),
            ("sbom", "Unknown top-level field 'sbom'"),
        ],
    );
}

#[test]
fn required_scalars() {
    let missing = json!({"name": null, "publisher": null, "version": null, "runtime": null});
    check_issues(
        with(missing),
        &[
            ("name", "'name' is required"),
            ("version", "'version' is required"),
            ("runtime", "'runtime' is required"),
            ("publisher", "'publisher' is required"),
        ],
    );
    check_issues(
        with(json!({"name": "  ", "publisher": "", "version": 1, "runtime": 2})),
        &[
            ("name", "non-empty"),
            ("version", "must be a string"),
            ("runtime", "must be a string"),
            ("publisher", "if provided, must be a non-empty string"),
        ],
    );
    check_issues(with(json!({"publisher": 7})), &[("publisher", "non-empty")]);
    check_issues(with(json!({"name": ["x"]})), &[("name", "non-empty")]);
}

#[test]
fn versions() {
    for ok in [
        "1.2.3",
        "0.0.0",
        "10.20.30-beta.1",
        "1.2.3+build.5",
        "1.2.3-rc-1+b.2",
        " 1.2.3 ",
    ] {
        let m = parse(&with(json!({"version": ok}))).expect(ok);
        assert_eq!(m.version, VersionSpec::Exact(ok.trim().into()));
    }
    let m = parse(&with(json!({"version": "2.5.*"}))).expect("wildcard");
    assert_eq!(m.version, VersionSpec::Wildcard { major: 2, minor: 5 });
    assert_eq!(m.version.to_string(), "2.5.*");
    assert_eq!(m.version_string(), None);
    for bad in [
        "",
        "1",
        "1.2",
        "v1.2.3",
        "1.2.3-",
        "1.2.3+",
        "1.2.3-a_b",
        "1.2.3.4",
        "1.*.*",
        "*",
        "1.2.x",
        "1.2.3 beta",
    ] {
        check_issues(with(json!({"version": bad})), &[("version", "semver-like")]);
    }
    check_issues(
        with(json!({"version": "99999999999999999999.0.*"})),
        &[("version", "too large")],
    );
}

#[test]
fn runtime() {
    for ok in ["wasm-js@1", "wasm32-wasi", "x@"] {
        parse(&with(json!({"runtime": ok}))).expect(ok);
    }
    for bad in ["", "   ", "wasmjs"] {
        check_issues(with(json!({"runtime": bad})), &[("runtime", "'@' or '-'")]);
    }
}

#[test]
fn runtime_chooses_the_wasi_http_world_and_its_capabilities() {
    let http = parse(&with(
        json!({"runtime": "wasi-http@0.2", "capabilities": ["cap:http.fetch", "cap:log.emit"]}),
    ))
    .expect("a wasi:http manifest");
    assert_eq!(http.world, World::WasiHttp);
    assert_eq!(http.runtime, "wasi-http@0.2");
    check_issues(
        with(json!({"runtime": "wasi-http@0.3", "capabilities": []})),
        &[("runtime", "unsupported wasi:http version 'wasi-http@0.3'")],
    );
    // The sample's cap:scheduler.manage needs the alga:extension interfaces.
    check_issues(
        with(json!({"runtime": "wasi-http"})),
        &[(
            "capabilities[0]",
            "'cap:scheduler.manage' is not available to wasi-http components",
        )],
    );
}

#[test]
fn string_lists() {
    check_issues(
        with(json!({"capabilities": "cap:log.emit"})),
        &[("capabilities", "must be an array")],
    );
    check_issues(
        with(json!({"capabilities": ["cap:log.emit", "", 3, " "]})),
        &[
            ("capabilities[1]", "capability must be a non-empty"),
            ("capabilities[2]", "capability must be a non-empty"),
            ("capabilities[3]", "capability must be a non-empty"),
        ],
    );
    check_issues(
        with(json!({"assets": {"a": 1}})),
        &[("assets", "must be an array")],
    );
    check_issues(
        with(json!({"assets": ["a", null]})),
        &[("assets[1]", "asset must be a non-empty")],
    );
    // Unknown capability names are refused, each named.
    check_issues(
        with(json!({"capabilities": ["events.publish", "cap:log.emit", " Cap:Nope "]})),
        &[
            ("capabilities[0]", "Unknown capability 'events.publish'."),
            ("capabilities[2]", "Unknown capability 'Cap:Nope'."),
        ],
    );
    // Known names are kept as declared.
    let m = parse(&with(json!({"capabilities": [" CAP:Log.Emit "]}))).expect("valid");
    assert_eq!(m.capabilities, vec![" CAP:Log.Emit "]);
}

#[test]
fn precompiled() {
    let m = parse(&with(
        json!({"precompiled": {"x86_64-linux-gnu": "precompiled/x.cwasm"}}),
    ))
    .expect("valid");
    assert_eq!(m.precompiled["x86_64-linux-gnu"], "precompiled/x.cwasm");
    check_issues(
        with(json!({"precompiled": ["x"]})),
        &[("precompiled", "must be an object")],
    );
    check_issues(
        with(json!({"precompiled": {" ": "a", "t": "", "u": 1}})),
        &[
            ("precompiled", "empty key"),
            ("precompiled.t", "non-empty string"),
            ("precompiled.u", "non-empty string"),
        ],
    );
}

#[test]
fn ui_rules() {
    check_issues(
        with(json!({"ui": "iframe"})),
        &[("ui", "must be an object")],
    );
    check_issues(
        with(json!({"ui": {"type": "page", "entry": ""}})),
        &[
            ("ui.type", "exactly 'iframe'"),
            ("ui.entry", "required and must be a non-empty"),
        ],
    );
    check_issues(
        with(json!({"ui": {"entry": "ui/index.html"}})),
        &[("ui.type", "exactly 'iframe'")],
    );
    check_issues(
        with(json!({"ui": {"type": "iframe", "entry": "ui/../secret.html"}})),
        &[("ui.entry", "must not contain '..'")],
    );
    check_issues(
        with(json!({"ui": {"type": "iframe", "entry": "ui/index.html", "hooks": []}})),
        &[("ui.hooks", "must be an object")],
    );
    check_issues(
        with(json!({"ui": {"type": "iframe", "entry": "e", "hooks": {
            "appMenu": "x", "clientPortalMenu": {"label": " "}}}})),
        &[
            ("ui.hooks.appMenu", "must be an object"),
            ("ui.hooks.clientPortalMenu.label", "non-empty string"),
        ],
    );
    check_issues(
        with(json!({"ui": {"type": "iframe", "entry": "e", "hooks": {"appMenu": {}}}})),
        &[("ui.hooks.appMenu.label", "is required")],
    );
}

#[test]
fn ui_is_normalised_and_other_hooks_dropped() {
    let m = parse(&with(
        json!({"ui": {"type": "iframe", "entry": "././ui//index.html",
        "routes": ["/x"],
        "hooks": {"clientPortalMenu": {"label": "  Portal  "}, "settings": {"x": 1}}}}),
    ))
    .expect("valid");
    let ui = m.ui.expect("ui present");
    assert_eq!(ui.entry, "ui/index.html");
    assert_eq!(ui.client_portal_menu_label.as_deref(), Some("Portal"));
    assert_eq!(ui.app_menu_label, None);
    assert_eq!(
        ui.to_alga_json(),
        json!({"type": "iframe", "entry": "ui/index.html",
               "hooks": {"clientPortalMenu": {"label": "Portal"}}})
    );
}

#[test]
fn api_shape() {
    check_issues(with(json!({"api": []})), &[("api", "must be an object")]);
    check_issues(
        with(json!({"api": {}})),
        &[("api.endpoints", "required when 'api' is provided")],
    );
    check_issues(
        with(json!({"api": {"endpoints": {}}})),
        &[("api.endpoints", "must be an array")],
    );
    check_issues(
        with(json!({"api": {"endpoints": ["GET /x"]}})),
        &[("api.endpoints[0]", "must be an object")],
    );
    let m = parse(&with(json!({"api": {"endpoints": []}}))).expect("empty endpoints are fine");
    assert!(m.endpoints.is_empty());
}

#[test]
fn endpoint_rules() {
    let ep = |method: Value, path: Value, handler: Value| {
        with(json!({"api": {"endpoints": [
            {"method": "GET", "path": "/ok", "handler": "h"},
            {"method": method, "path": path, "handler": handler}
        ]}}))
    };
    check_issues(
        ep(json!(null), json!(null), json!(null)),
        &[
            ("api.endpoints[1].method", "is required"),
            ("api.endpoints[1].path", "is required"),
            ("api.endpoints[1].handler", "is required"),
        ],
    );
    check_issues(
        ep(json!("FETCH"), json!("/a b"), json!("../h")),
        &[
            ("api.endpoints[1].method", "must be one of"),
            ("api.endpoints[1].path", "must not contain spaces"),
            ("api.endpoints[1].handler", "must not contain '..'"),
        ],
    );
    check_issues(
        ep(json!(" get"), json!("/a/../b\t"), json!("h")),
        &[
            ("api.endpoints[1].method", "must be one of"),
            ("api.endpoints[1].path", "must not contain spaces"),
            ("api.endpoints[1].path", "must not contain '..'"),
        ],
    );
    check_issues(
        ep(json!("optıons"), json!("./"), json!(3)),
        &[
            ("api.endpoints[1].method", "must be one of"),
            ("api.endpoints[1].path", "must start with '/'"),
            ("api.endpoints[1].handler", "non-empty string"),
        ],
    );
}

#[test]
fn endpoints_are_normalised() {
    let cases = [
        (
            ("get", "api/status", "dist/main"),
            ("GET", "/api/status", "dist/main"),
        ),
        (
            ("Post", "./api//x///y", "./dist//main"),
            ("POST", "/api/x/y", "dist/main"),
        ),
        (("options", "//a", "././h"), ("OPTIONS", "/a", "h")),
        (("head", "././a/./b", "h//"), ("HEAD", "/a/./b", "h/")),
        (("patch", "/x", "h"), ("PATCH", "/x", "h")),
        (("put", "/x", "h"), ("PUT", "/x", "h")),
    ];
    for ((method, path, handler), (wm, wp, wh)) in cases {
        let m = parse(&with(json!({"api": {"endpoints": [
            {"method": method, "path": path, "handler": handler, "schedulable": true}
        ]}})))
        .expect(path);
        assert_eq!(
            m.endpoints,
            vec![Endpoint {
                method: wm.into(),
                path: wp.into(),
                handler: wh.into()
            }],
            "{method} {path} {handler}"
        );
    }
}

#[test]
fn issues_from_every_section_are_reported_together() {
    let input = json!({"name": "", "publisher": "p", "version": "x", "runtime": "r",
        "ui": {"type": "iframe"}, "api": {"endpoints": [{}]}, "extra": 1});
    let err = parse(&input).expect_err("invalid");
    let paths: Vec<String> = err.issues().into_iter().map(|i| i.path).collect();
    assert_eq!(
        paths,
        [
            "extra",
            "name",
            "version",
            "runtime",
            "ui.entry",
            "api.endpoints[0].method",
            "api.endpoints[0].path",
            "api.endpoints[0].handler"
        ]
    );
    assert!(err.to_string().contains("name: Field 'name'"));
}

#[test]
fn wildcard_resolution() {
    let w = VersionSpec::Wildcard { major: 1, minor: 2 };
    let none: [&str; 0] = [];
    let cases: &[(&[&str], &str)] = &[
        (&none, "1.2.0"),
        (&["1.2.0"], "1.2.1"),
        (&["1.2.0", "1.2.9", "1.2.10", "1.2.3"], "1.2.11"),
        // Pre-releases and build metadata are ignored, even when higher.
        (&["1.2.4", "1.2.7-beta", "1.2.8+b1"], "1.2.5"),
        (&["1.2.0-rc.1"], "1.2.0"),
        // Other minors, majors and look-alike prefixes do not count.
        (&["1.3.5", "2.2.5", "11.2.5", "1.22.5", "1.2"], "1.2.0"),
        (&["1.2.007"], "1.2.8"),
    ];
    for (existing, want) in cases {
        assert_eq!(w.resolve(existing), *want, "{existing:?}");
    }
    let exact = VersionSpec::Exact("3.0.0-beta".into());
    assert_eq!(exact.resolve(&["3.0.0-beta".to_string()]), "3.0.0-beta");
}

#[test]
fn sanitize_path_matches_alga_examples() {
    assert_eq!(sanitize_path("./a/b"), "a/b");
    assert_eq!(sanitize_path("a//b///c"), "a/b/c");
    assert_eq!(sanitize_path("/a//b"), "/a/b");
    assert_eq!(sanitize_path("././"), "");
}

/// JSON values biased towards manifest shapes: known keys, nested objects and arrays.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        "[ -~]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("1.2.*"),
            Just("1.2.3-x"),
            Just("wasm-js@1"),
            Just("iframe"),
            Just("GET"),
            Just("./a//b"),
            Just(".."),
            Just("")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    let key = prop_oneof![
        proptest::sample::select(&TOP_LEVEL_FIELDS[..]).prop_map(str::to_owned),
        proptest::sample::select(
            &[
                "type",
                "entry",
                "hooks",
                "appMenu",
                "label",
                "endpoints",
                "method",
                "path",
                "handler"
            ][..]
        )
        .prop_map(str::to_owned),
        "[a-z]{0,4}",
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn parse_never_panics_on_json(v in json_value()) {
        let _ = parse(&v);
    }

    #[test]
    fn parse_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Manifest::parse(&bytes);
    }

    #[test]
    fn valid_manifests_stay_valid_after_adding_extra_endpoint_keys(extra in "[a-z]{1,8}") {
        let v = with(json!({"api": {"endpoints": [{"method": "get", "path": "x", "handler": "h", extra: 1}]}}));
        prop_assert!(parse(&v).is_ok());
    }
}
