//! `template.yaml` as the local stack's source of truth: which tables, queues and buckets exist,
//! and which environment each function gets. Intrinsics are resolved against local names.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use crate::LocalError;

pub struct Template {
    resources: serde_yaml::Mapping,
    parameters: serde_yaml::Mapping,
    conditions: serde_yaml::Mapping,
    globals_env: serde_yaml::Mapping,
    /// The template's folder: relative paths in it (`DefinitionUri`) start here.
    dir: PathBuf,
}

/// What `!Ref` and `!GetAtt` of a provisioned resource give locally.
#[derive(Clone, Debug, Default)]
pub struct Physical {
    /// `!Ref`: a table's or bucket's name, a queue's URL, a state machine's ARN.
    pub reference: String,
    /// `!GetAtt X.<attribute>`.
    pub attributes: HashMap<String, String>,
}

/// Resolves intrinsics to strings.
pub struct Resolver<'a> {
    pub stack_name: &'a str,
    pub region: &'a str,
    pub physical: &'a HashMap<String, Physical>,
    pub parameters: &'a HashMap<String, String>,
    pub conditions: &'a serde_yaml::Mapping,
}

fn mapping(value: Option<&Value>) -> serde_yaml::Mapping {
    value.and_then(Value::as_mapping).cloned().unwrap_or_default()
}

impl Template {
    pub fn load(path: &Path) -> Result<Self, LocalError> {
        let text = std::fs::read_to_string(path).map_err(LocalError::io("read template.yaml"))?;
        let doc: Value = serde_yaml::from_str(&text).map_err(|e| LocalError::Template(e.to_string()))?;
        let globals_env = mapping(
            doc.get("Globals")
                .and_then(|g| g.get("Function"))
                .and_then(|f| f.get("Environment"))
                .and_then(|e| e.get("Variables")),
        );
        Ok(Self {
            resources: mapping(doc.get("Resources")),
            parameters: mapping(doc.get("Parameters")),
            conditions: mapping(doc.get("Conditions")),
            globals_env,
            dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        })
    }

    /// The folder the template's relative paths start from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The template's `Conditions`, for `!If` and `!Condition`.
    pub fn conditions(&self) -> &serde_yaml::Mapping {
        &self.conditions
    }

    /// Logical ids and properties of every resource of `kind`, in template order.
    pub fn resources_of(&self, kind: &str) -> Vec<(String, Value)> {
        self.resources
            .iter()
            .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(kind))
            .filter_map(|(id, r)| Some((id.as_str()?.to_owned(), r.get("Properties").cloned().unwrap_or(Value::Null))))
            .collect()
    }

    /// The `Condition` a resource is created under, if any.
    pub fn resource_condition(&self, id: &str) -> Option<String> {
        self.resources.get(id)?.get("Condition")?.as_str().map(str::to_owned)
    }

    pub fn parameter_default(&self, name: &str) -> Option<String> {
        self.parameters.get(name)?.get("Default").map(scalar_to_string)
    }

    pub fn parameter_names(&self) -> Vec<String> {
        self.parameters.keys().filter_map(|k| k.as_str().map(str::to_owned)).collect()
    }

    /// A function's environment: the Globals' variables overlaid with its own, resolved.
    pub fn function_environment(
        &self,
        function: &str,
        resolver: &Resolver,
    ) -> Result<BTreeMap<String, String>, LocalError> {
        let resource =
            self.resources.get(function).ok_or_else(|| LocalError::Template(format!("no resource {function}")))?;
        let own =
            mapping(resource.get("Properties").and_then(|p| p.get("Environment")).and_then(|e| e.get("Variables")));
        let mut env = BTreeMap::new();
        for (name, value) in self.globals_env.iter().chain(own.iter()) {
            let name = name.as_str().ok_or_else(|| LocalError::Template("non-string variable name".into()))?;
            env.insert(name.to_owned(), resolver.resolve(value)?);
        }
        Ok(env)
    }
}

impl Template {
    /// The `Events` of `function` whose `Type` is `kind` (their `Properties`).
    pub fn event_sources(&self, function: &str, kind: &str) -> Vec<Value> {
        let events =
            mapping(self.resources.get(function).and_then(|r| r.get("Properties")).and_then(|p| p.get("Events")));
        events
            .values()
            .filter(|e| e.get("Type").and_then(Value::as_str) == Some(kind))
            .filter_map(|e| e.get("Properties").cloned())
            .collect()
    }
}

fn scalar_to_string(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => serde_yaml::to_string(other).unwrap_or_default().trim().to_owned(),
    }
}

impl Resolver<'_> {
    pub fn resolve(&self, value: &Value) -> Result<String, LocalError> {
        match value {
            Value::Tagged(tagged) => {
                let tag = tagged.tag.to_string();
                let arg = &tagged.value;
                match tag.trim_start_matches('!') {
                    "Ref" => self.reference(arg.as_str().unwrap_or_default()),
                    "GetAtt" => {
                        let (id, attribute) = arg
                            .as_str()
                            .and_then(|s| s.split_once('.'))
                            .ok_or_else(|| LocalError::Template(format!("bad !GetAtt {arg:?}")))?;
                        self.attribute(id, attribute)
                    }
                    "Sub" => self.substitute(arg.as_str().unwrap_or_default()),
                    "If" => {
                        let branches = arg.as_sequence().filter(|b| b.len() == 3);
                        let branches = branches.ok_or_else(|| LocalError::Template(format!("bad !If {arg:?}")))?;
                        let chosen = if self.condition(branches[0].as_str().unwrap_or_default())? {
                            &branches[1]
                        } else {
                            &branches[2]
                        };
                        self.resolve(chosen)
                    }
                    "Join" => {
                        let parts = arg.as_sequence().filter(|p| p.len() == 2);
                        let parts = parts.ok_or_else(|| LocalError::Template(format!("bad !Join {arg:?}")))?;
                        let delimiter = parts[0].as_str().unwrap_or_default();
                        match parts[1].as_sequence() {
                            Some(items) => {
                                let items: Result<Vec<String>, LocalError> =
                                    items.iter().map(|i| self.resolve(i)).collect();
                                Ok(items?.join(delimiter))
                            }
                            // A list parameter resolves to its comma-separated text.
                            None => Ok(self.resolve(&parts[1])?.split(',').collect::<Vec<_>>().join(delimiter)),
                        }
                    }
                    other => Err(LocalError::Template(format!("intrinsic !{other} is not supported locally"))),
                }
            }
            Value::Mapping(m) if m.len() == 1 => {
                let (key, arg) = m.iter().next().expect("one entry");
                let tagged = serde_yaml::value::TaggedValue {
                    tag: serde_yaml::value::Tag::new(key.as_str().unwrap_or_default().trim_start_matches("Fn::")),
                    value: arg.clone(),
                };
                self.resolve(&Value::Tagged(Box::new(tagged)))
            }
            scalar => Ok(scalar_to_string(scalar)),
        }
    }

    /// Whether the named condition holds, with these parameters.
    /// Whether the template's condition `name` holds.
    pub fn condition(&self, name: &str) -> Result<bool, LocalError> {
        let expression = self
            .conditions
            .get(name)
            .ok_or_else(|| LocalError::Template(format!("condition {name} is not defined")))?;
        self.holds(expression)
    }

    fn holds(&self, expression: &Value) -> Result<bool, LocalError> {
        let (function, arg) = match expression {
            Value::Tagged(tagged) => (tagged.tag.to_string().trim_start_matches('!').to_owned(), tagged.value.clone()),
            Value::Mapping(m) if m.len() == 1 => {
                let (key, arg) = m.iter().next().expect("one entry");
                (key.as_str().unwrap_or_default().trim_start_matches("Fn::").to_owned(), arg.clone())
            }
            other => return Err(LocalError::Template(format!("not a condition: {other:?}"))),
        };
        let args = || arg.as_sequence().cloned().unwrap_or_default();
        match function.as_str() {
            "Equals" => {
                let args = args();
                Ok(args.len() == 2 && self.resolve(&args[0])? == self.resolve(&args[1])?)
            }
            "Not" => Ok(!self.holds(args().first().unwrap_or(&Value::Null))?),
            "And" => args().iter().try_fold(true, |all, a| Ok(all && self.holds(a)?)),
            "Or" => args().iter().try_fold(false, |any, a| Ok(any || self.holds(a)?)),
            "Condition" => self.condition(arg.as_str().unwrap_or_default()),
            other => Err(LocalError::Template(format!("condition function {other} is not supported locally"))),
        }
    }

    fn reference(&self, name: &str) -> Result<String, LocalError> {
        match name {
            // A property set to this is absent; locally, an empty value, which settings treat alike.
            "AWS::NoValue" => Ok(String::new()),
            "AWS::StackName" => Ok(self.stack_name.to_owned()),
            "AWS::Region" => Ok(self.region.to_owned()),
            "AWS::AccountId" => Ok("123456789012".to_owned()),
            "AWS::URLSuffix" => Ok("amazonaws.com".to_owned()),
            _ => {
                if let Some(p) = self.physical.get(name) {
                    return Ok(p.reference.clone());
                }
                self.parameters
                    .get(name)
                    .cloned()
                    .ok_or_else(|| LocalError::Template(format!("!Ref {name}: not provisioned locally")))
            }
        }
    }

    fn attribute(&self, id: &str, attribute: &str) -> Result<String, LocalError> {
        self.physical
            .get(id)
            .and_then(|p| p.attributes.get(attribute))
            .cloned()
            .ok_or_else(|| LocalError::Template(format!("!GetAtt {id}.{attribute}: not provisioned locally")))
    }

    /// `${Name}` and `${Name.Attribute}` placeholders.
    fn substitute(&self, text: &str) -> Result<String, LocalError> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').ok_or_else(|| LocalError::Template(format!("unclosed ${{ in {text}")))?;
            let name = &rest[start + 2..start + end];
            let value = match name.split_once('.') {
                Some((id, attribute)) if !name.starts_with("AWS::") => self.attribute(id, attribute)?,
                _ => self.reference(name)?,
            };
            out.push_str(&value);
            rest = &rest[start + end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}
