//! Checks real admin API responses against the OpenAPI document the binary
//! serves, so the document cannot drift from what the API answers.
//!
//! A small JSON Schema checker for the keywords `openapi.json` uses: `$ref`
//! (to `#/components/schemas`), `type` (a name or a list), `properties`,
//! `required`, `additionalProperties`, `items`, `enum`, `const`, `anyOf`,
//! `minimum` and `maximum`. It is stricter than JSON Schema in one way: an
//! object whose schema lists `properties` and says nothing of
//! `additionalProperties` may not carry a field the document leaves out,
//! because an undocumented field is a documentation bug.

use serde_json::Value;

pub struct Spec(Value);

impl Default for Spec {
    fn default() -> Self {
        Spec(serde_json::from_str(weir::admin::OPENAPI).expect("openapi.json is JSON"))
    }
}

impl Spec {
    /// Where `body`, the JSON answer to `method path` with `status`,
    /// departs from the document; empty when it conforms. An operation or
    /// status the document lacks is a departure too.
    pub fn check_response(
        &self,
        method: &str,
        path: &str,
        status: u16,
        body: &Value,
    ) -> Vec<String> {
        let path = path.split('?').next().unwrap_or(path);
        let Some((template, op)) = self.operation(method, path) else {
            return vec![format!("{method} {path} is not in the document")];
        };
        let responses = &op["responses"];
        let Some(response) = responses.get(status.to_string()) else {
            return vec![format!(
                "{method} {template}: status {status} is not documented"
            )];
        };
        let schema = &response["content"]["application/json"]["schema"];
        if schema.is_null() {
            return Vec::new();
        }
        let mut errors = Vec::new();
        self.check(schema, body, "body", &mut errors);
        errors
            .into_iter()
            .map(|e| format!("{method} {template} {status}: {e}"))
            .collect()
    }

    fn operation(&self, method: &str, path: &str) -> Option<(&str, &Value)> {
        let segments: Vec<&str> = path.split('/').collect();
        self.0["paths"]
            .as_object()?
            .iter()
            .find_map(|(template, item)| {
                let parts: Vec<&str> = template.split('/').collect();
                let matches = parts.len() == segments.len()
                    && parts
                        .iter()
                        .zip(&segments)
                        .all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}')));
                let op = item.get(method.to_lowercase())?;
                matches.then_some((template.as_str(), op))
            })
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema["$ref"].as_str() {
            Some(reference) => {
                let name = reference
                    .strip_prefix("#/components/schemas/")
                    .unwrap_or_else(|| panic!("unsupported $ref {reference}"));
                let target = &self.0["components"]["schemas"][name];
                assert!(!target.is_null(), "dangling $ref {reference}");
                self.resolve(target)
            }
            None => schema,
        }
    }

    fn check(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if let Some(options) = schema["anyOf"].as_array() {
            let fits = options.iter().any(|option| {
                let mut e = Vec::new();
                self.check(option, value, at, &mut e);
                e.is_empty()
            });
            if !fits {
                errors.push(format!("{at} = {value} fits none of anyOf"));
            }
            return;
        }
        if let Some(expected) = schema.get("const")
            && expected != value
        {
            errors.push(format!(
                "{at} = {value}, documented as the constant {expected}"
            ));
        }
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(value)
        {
            errors.push(format!("{at} = {value} is not one of {allowed:?}"));
        }
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !types.is_empty() && !types.iter().any(|t| is_type(value, t)) {
            errors.push(format!("{at} = {value} is not of type {types:?}"));
            return;
        }
        if let Some(n) = value.as_f64() {
            if schema["minimum"].as_f64().is_some_and(|min| n < min) {
                errors.push(format!("{at} = {n} is below the documented minimum"));
            }
            if schema["maximum"].as_f64().is_some_and(|max| n > max) {
                errors.push(format!("{at} = {n} is above the documented maximum"));
            }
        }
        match value {
            Value::Object(fields) => self.check_object(schema, fields, at, errors),
            Value::Array(items) => {
                if let Some(item) = schema.get("items") {
                    for (i, v) in items.iter().enumerate() {
                        self.check(item, v, &format!("{at}[{i}]"), errors);
                    }
                }
            }
            _ => {}
        }
    }

    fn check_object(
        &self,
        schema: &Value,
        fields: &serde_json::Map<String, Value>,
        at: &str,
        errors: &mut Vec<String>,
    ) {
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap_or_default();
            if !fields.contains_key(name) {
                errors.push(format!("{at}.{name} is required but missing"));
            }
        }
        let properties = schema["properties"].as_object();
        for (name, v) in fields {
            let field = format!("{at}.{name}");
            match (
                properties.and_then(|p| p.get(name)),
                schema.get("additionalProperties"),
            ) {
                (Some(property), _) => self.check(property, v, &field, errors),
                (None, Some(Value::Bool(false))) => errors.push(format!("{field} is not allowed")),
                (None, Some(Value::Bool(true))) => {}
                (None, Some(extra)) => self.check(extra, v, &field, errors),
                (None, None) if properties.is_some() => {
                    errors.push(format!("{field} is answered but not documented"))
                }
                (None, None) => {}
            }
        }
    }
}

fn is_type(value: &Value, name: &str) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        other => panic!("unsupported type {other}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn finds_what_the_document_does_not_say() {
        let spec = Spec::default();
        let ok = spec.check_response(
            "POST",
            "/api/v1/stop",
            200,
            &json!({"running": false, "message": "stopped"}),
        );
        assert_eq!(ok, Vec::<String>::new());
        let errors = spec.check_response(
            "POST",
            "/api/v1/stop",
            200,
            &json!({"running": "no", "message": "stopped", "extra": 1}),
        );
        assert!(
            errors.iter().any(|e| e.contains("body.running")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("body.extra is answered but not documented")),
            "{errors:?}"
        );
        let errors = spec.check_response("GET", "/api/v1/stages/x/state/y", 299, &json!({}));
        assert!(
            errors[0].contains("status 299 is not documented"),
            "{errors:?}"
        );
        let errors = spec.check_response("GET", "/nowhere", 200, &json!({}));
        assert!(errors[0].contains("not in the document"), "{errors:?}");
    }
}
