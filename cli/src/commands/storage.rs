//! `annex storage schema add|list`: the JSON schemas of an install's storage
//! namespaces (`Installs.AddStorageSchema`, `Installs.ListStorageSchemas`).
//! The control plane checks the document (it must compile, and may not refer
//! outside itself); the CLI only reads it.

use std::io::Read as _;
use std::path::Path;

use annex_proto::pb;
use anyhow::Context as _;
use serde_json::json;

use super::Context;
use super::installs::install_ref;
use crate::cli::{SchemaCommand, StorageCommand};
use crate::client::remote;
use crate::output::Report;

/// The largest schema file read (the control plane refuses more than 64 KiB).
const MAX_SCHEMA_FILE: u64 = 1024 * 1024;

pub async fn run(cx: &Context, cmd: StorageCommand) -> anyhow::Result<Report> {
    match cmd {
        StorageCommand::Schema(SchemaCommand::Add {
            extension,
            namespace,
            file,
        }) => add(cx, &extension, &namespace, &file).await,
        StorageCommand::Schema(SchemaCommand::List { extension }) => list(cx, &extension).await,
    }
}

fn read_schema(file: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    if file == Path::new("-") {
        std::io::stdin()
            .take(MAX_SCHEMA_FILE)
            .read_to_string(&mut text)
            .context("reading the schema from standard input")?;
    } else {
        std::fs::File::open(file)
            .with_context(|| format!("opening {}", file.display()))?
            .take(MAX_SCHEMA_FILE)
            .read_to_string(&mut text)
            .with_context(|| format!("reading {}", file.display()))?;
    }
    Ok(text)
}

async fn add(
    cx: &Context,
    extension: &str,
    namespace: &str,
    file: &Path,
) -> anyhow::Result<Report> {
    let schema_json = read_schema(file)?;
    let tenant = cx.tenant()?;
    let cp = cx.connect().await?;
    let schema = cp
        .installs()
        .add_storage_schema(pb::AddStorageSchemaRequest {
            install: Some(install_ref(&tenant, extension)),
            namespace: namespace.to_owned(),
            schema_json,
        })
        .await
        .map_err(remote)
        .with_context(|| {
            format!("adding a schema to namespace {namespace} of {extension} for tenant {tenant}")
        })?
        .into_inner();
    Ok(Report::new(
        format!(
            "namespace {} now has schema version {}",
            schema.namespace, schema.version
        ),
        schema_json_value(&schema),
    ))
}

async fn list(cx: &Context, extension: &str) -> anyhow::Result<Report> {
    let tenant = cx.tenant()?;
    let cp = cx.connect().await?;
    let schemas = cp
        .installs()
        .list_storage_schemas(install_ref(&tenant, extension))
        .await
        .map_err(remote)
        .with_context(|| format!("listing the storage schemas of {extension} for tenant {tenant}"))?
        .into_inner()
        .schemas;
    let text = if schemas.is_empty() {
        "no storage schemas".to_owned()
    } else {
        schemas
            .iter()
            .map(|s| format!("{}\tv{}\t{}", s.namespace, s.version, s.schema_json))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(Report::new(
        text,
        json!({ "schemas": schemas.iter().map(schema_json_value).collect::<Vec<_>>() }),
    ))
}

fn schema_json_value(s: &pb::StorageSchema) -> serde_json::Value {
    json!({
        "namespace": s.namespace,
        "version": s.version,
        "schema": serde_json::from_str::<serde_json::Value>(&s.schema_json)
            .unwrap_or(serde_json::Value::Null),
    })
}
