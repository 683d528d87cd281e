//! The OpenAPI document's `links`, checked from the document itself: a stateful fuzzer (and a
//! generated client) walks from each create operation to every operation that takes the new
//! id. A create operation is a `POST` on a collection path answering 201 with operations under
//! `{that path}/{param}`; a new one added without links fails here.

use std::collections::BTreeSet;

use serde_json::Map;

use super::*;

/// Every (path, method) → operation in the document.
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            all.push((path.clone(), method.clone(), op));
        }
    }
    all
}

/// Follows `$ref`s into `#/components/schemas`.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.strip_prefix("#/components/schemas/").expect("a component reference");
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// Whether a value matching `schema` has a field at the JSON pointer `pointer` (`/a/b`).
fn has_field(doc: &Value, schema: &Value, pointer: &str) -> bool {
    let schema = resolve(doc, schema);
    let Some(rest) = pointer.strip_prefix('/') else { return pointer.is_empty() };
    let (field, deeper) = rest.split_once('/').map_or((rest, ""), |(f, d)| (f, d));
    let deeper = if deeper.is_empty() { String::new() } else { format!("/{deeper}") };
    let composed = ["allOf", "oneOf", "anyOf"].iter().filter_map(|k| schema[*k].as_array()).flatten();
    let by_composition = composed.clone().any(|s| has_field(doc, s, pointer));
    by_composition || schema["properties"].get(field).is_some_and(|s| has_field(doc, s, &deeper))
}

fn success_schema(op: &Value) -> Option<&Value> {
    let responses = op["responses"].as_object()?;
    let (_, answer) = responses.iter().find(|(status, _)| status.starts_with('2'))?;
    answer.pointer("/content/application~1json/schema")
}

fn request_schema(op: &Value) -> Option<&Value> {
    op.pointer("/requestBody/content/application~1json/schema")
}

fn success_links(op: &Value) -> Map<String, Value> {
    let responses = op["responses"].as_object().cloned().unwrap_or_default();
    responses
        .iter()
        .filter(|(status, _)| status.starts_with('2'))
        .filter_map(|(_, answer)| answer["links"].as_object().cloned())
        .flatten()
        .collect()
}

/// `$response.body#/ptr` must name a field of the source's answer, `$request.body#/ptr` one of
/// its request body.
fn check_expression(doc: &Value, source: &Value, expression: &str, what: &str) {
    if let Some(pointer) = expression.strip_prefix("$response.body#") {
        let schema =
            success_schema(source).unwrap_or_else(|| panic!("{what}: the source has no JSON answer"));
        assert!(has_field(doc, schema, pointer), "{what}: {expression} is not a field of the answer");
    } else if let Some(pointer) = expression.strip_prefix("$request.body#") {
        let schema = request_schema(source).unwrap_or_else(|| panic!("{what}: the source has no body"));
        assert!(has_field(doc, schema, pointer), "{what}: {expression} is not a field of the request");
    } else {
        panic!("{what}: unexpected link expression {expression}");
    }
}

#[test]
fn every_create_operation_links_to_each_operation_on_the_id_it_creates() {
    let doc = openapi_document();
    let ops = operations(&doc);
    let by_id: BTreeMap<&str, (&str, &Value)> = ops
        .iter()
        .map(|(path, _, op)| (op["operationId"].as_str().expect("an operationId"), (path.as_str(), *op)))
        .collect();
    let mut creates = 0;
    for (path, method, op) in &ops {
        let created = op["responses"].get("201").is_some();
        let under_id =
            |p: &str| p.strip_prefix(path.as_str()).and_then(|rest| rest.strip_prefix("/{")).is_some();
        let on_new_id: Vec<&str> = ops
            .iter()
            .filter(|(p, _, _)| under_id(p))
            .map(|(_, _, o)| o["operationId"].as_str().expect("an operationId"))
            .collect();
        if method != "post" || !created || path.ends_with('}') || on_new_id.is_empty() {
            continue;
        }
        creates += 1;
        let links = success_links(op);
        let linked: BTreeSet<&str> = links.values().filter_map(|l| l["operationId"].as_str()).collect();
        for target in &on_new_id {
            assert!(linked.contains(target), "POST {path} creates an id but has no link to {target}");
        }
        for (name, link) in &links {
            let target = link["operationId"].as_str().unwrap_or_default();
            assert!(by_id.contains_key(target), "POST {path}: link {name} names no operation ({target})");
            if on_new_id.contains(&target) {
                let id_param = &by_id[target].0[path.len() + 2..];
                let id_param = &id_param[..id_param.find('}').expect("a closed parameter")];
                let expression = link["parameters"][format!("path.{id_param}")]
                    .as_str()
                    .unwrap_or_else(|| panic!("POST {path}: link {name} does not fill path.{id_param}"));
                check_expression(&doc, op, expression, &format!("POST {path} → {target}"));
            }
        }
    }
    // Customers, licenses, API keys at least: a document that lost every 201 must not pass.
    assert!(creates >= 3, "only {creates} create operations found");
}

#[test]
fn every_link_names_an_operation_and_fields_that_exist() {
    let doc = openapi_document();
    let ops = operations(&doc);
    let by_id: BTreeMap<&str, &Value> =
        ops.iter().map(|(_, _, op)| (op["operationId"].as_str().expect("an operationId"), *op)).collect();
    let mut checked = 0;
    for (path, method, op) in &ops {
        for (name, link) in success_links(op) {
            let what = format!("{method} {path}: link {name}");
            let target_id = link["operationId"].as_str().unwrap_or_default();
            let target = by_id.get(target_id).unwrap_or_else(|| panic!("{what}: no operation {target_id}"));
            let target_path = target_id.split_once(' ').map(|(_, p)| p).expect("`METHOD /path` ids");
            for (parameter, expression) in link["parameters"].as_object().cloned().unwrap_or_default() {
                let name = parameter.strip_prefix("path.").unwrap_or_else(|| panic!("{what}: {parameter}"));
                assert!(
                    target_path.contains(&format!("{{{name}}}")),
                    "{what}: {target_id} has no {{{name}}}"
                );
                check_expression(&doc, op, expression.as_str().expect("an expression"), &what);
            }
            for (field, expression) in link["requestBody"].as_object().cloned().unwrap_or_default() {
                let body =
                    request_schema(target).unwrap_or_else(|| panic!("{what}: {target_id} takes no body"));
                assert!(
                    has_field(&doc, body, &format!("/{field}")),
                    "{what}: {target_id} has no field {field}"
                );
                check_expression(&doc, op, expression.as_str().expect("an expression"), &what);
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "the document has no links");
}

/// Every `$ref` anywhere in the document names a schema it holds (a dangling one made
/// schemathesis skip a query parameter).
#[test]
fn every_reference_resolves() {
    fn walk<'a>(value: &'a Value, refs: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get("$ref") {
                    refs.push(reference);
                }
                map.values().for_each(|v| walk(v, refs));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, refs)),
            _ => {}
        }
    }
    let doc = openapi_document();
    let mut refs = Vec::new();
    walk(&doc, &mut refs);
    assert!(refs.len() > 20, "the document refers to its schemas");
    let dangling: BTreeSet<&str> = refs
        .into_iter()
        .filter(|r| {
            r.strip_prefix("#/components/schemas/")
                .is_none_or(|name| doc["components"]["schemas"].get(name).is_none())
        })
        .collect();
    assert!(dangling.is_empty(), "dangling references: {dangling:?}");
}
