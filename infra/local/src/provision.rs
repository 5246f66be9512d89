//! Creates in the emulator the tables, queues, buckets, secrets and state machines that `template.yaml`
//! declares.

use std::collections::HashMap;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TimeToLiveSpecification,
};
use aws_sdk_sfn::types::StateMachineType;
use aws_sdk_sqs::types::QueueAttributeName;
use runner_adapters::aws;
use serde_yaml::Value;

use crate::LocalError;
use crate::template::{Physical, Resolver, Template};

const REGION: &str = "us-east-1";

fn text(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

fn list<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value.get(key).and_then(Value::as_sequence).map(Vec::as_slice).unwrap_or_default()
}

fn sdk_err(what: &'static str) -> impl Fn(String) -> LocalError {
    move |detail| LocalError::Provision { what, detail }
}

fn key_schema(value: &Value) -> Result<Vec<KeySchemaElement>, LocalError> {
    list(value, "KeySchema")
        .iter()
        .map(|k| {
            KeySchemaElement::builder()
                .attribute_name(text(k, "AttributeName").unwrap_or_default())
                .key_type(KeyType::from(text(k, "KeyType").unwrap_or_default().as_str()))
                .build()
                .map_err(|e| sdk_err("key schema")(e.to_string()))
        })
        .collect()
}

/// Provisions everything under `stack_name` and returns what each logical id resolves to.
pub async fn provision(
    sdk: &SdkConfig,
    template: &Template,
    stack_name: &str,
    parameters: &HashMap<String, String>,
) -> Result<HashMap<String, Physical>, LocalError> {
    let mut physical = HashMap::new();
    let name_for =
        |props: &Value, name_key: &str, id: &str, physical: &HashMap<String, Physical>| match props.get(name_key) {
            Some(v) => Resolver { stack_name, region: REGION, physical, parameters, conditions: template.conditions() }
                .resolve(v),
            None => Ok(format!("{stack_name}-{id}")),
        };

    let dynamodb = aws::dynamodb(sdk);
    for (id, props) in template.resources_of("AWS::DynamoDB::Table") {
        let name = name_for(&props, "TableName", &id, &physical)?;
        let mut create = dynamodb
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest)
            .set_key_schema(Some(key_schema(&props)?));
        for attr in list(&props, "AttributeDefinitions") {
            create = create.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(text(attr, "AttributeName").unwrap_or_default())
                    .attribute_type(ScalarAttributeType::from(text(attr, "AttributeType").unwrap_or_default().as_str()))
                    .build()
                    .map_err(|e| sdk_err("attribute definition")(e.to_string()))?,
            );
        }
        for index in list(&props, "GlobalSecondaryIndexes") {
            let projection = index.get("Projection").and_then(|p| text(p, "ProjectionType")).unwrap_or("ALL".into());
            create = create.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(text(index, "IndexName").unwrap_or_default())
                    .set_key_schema(Some(key_schema(index)?))
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::from(projection.as_str()))
                            .set_non_key_attributes(
                                index
                                    .get("Projection")
                                    .map(|p| {
                                        list(p, "NonKeyAttributes")
                                            .iter()
                                            .filter_map(|a| a.as_str().map(str::to_owned))
                                            .collect::<Vec<_>>()
                                    })
                                    .filter(|attributes| !attributes.is_empty()),
                            )
                            .build(),
                    )
                    .build()
                    .map_err(|e| sdk_err("index")(e.to_string()))?,
            );
        }
        if let Some(view) = props.get("StreamSpecification").and_then(|s| text(s, "StreamViewType")) {
            create = create.stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::from(view.as_str()))
                    .build()
                    .map_err(|e| sdk_err("stream")(e.to_string()))?,
            );
        }
        let out = create.send().await.map_err(|e| sdk_err("create table")(aws_err(&e)))?;
        let table = out.table_description.ok_or_else(|| sdk_err("create table")("no table description".into()))?;
        if let Some(ttl) = props.get("TimeToLiveSpecification").and_then(|t| text(t, "AttributeName")) {
            dynamodb
                .update_time_to_live()
                .table_name(&name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(ttl)
                        .enabled(true)
                        .build()
                        .map_err(|e| sdk_err("ttl")(e.to_string()))?,
                )
                .send()
                .await
                .map_err(|e| sdk_err("enable ttl")(aws_err(&e)))?;
        }
        let mut attributes = HashMap::from([("Arn".to_owned(), table.table_arn.unwrap_or_default())]);
        if let Some(stream) = table.latest_stream_arn {
            attributes.insert("StreamArn".into(), stream);
        }
        physical.insert(id, Physical { reference: name, attributes });
    }

    // Dead-letter queues first: a redrive policy names its DLQ's ARN.
    let sqs = aws::sqs(sdk);
    let mut queues = template.resources_of("AWS::SQS::Queue");
    queues.sort_by_key(|(_, props)| props.get("RedrivePolicy").is_some());
    for (id, props) in queues {
        let mut name = name_for(&props, "QueueName", &id, &physical)?;
        let fifo = text(&props, "FifoQueue").as_deref() == Some("true");
        if fifo && !name.ends_with(".fifo") {
            name.push_str(".fifo");
        }
        let mut create = sqs.create_queue().queue_name(&name);
        for key in
            ["FifoQueue", "ContentBasedDeduplication", "VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds"]
        {
            if let Some(v) = text(&props, key) {
                create = create.attributes(QueueAttributeName::from(key), v);
            }
        }
        if let Some(redrive) = props.get("RedrivePolicy") {
            let resolver = Resolver {
                stack_name,
                region: REGION,
                physical: &physical,
                parameters,
                conditions: template.conditions(),
            };
            let target = resolver.resolve(redrive.get("deadLetterTargetArn").unwrap_or(&Value::Null))?;
            let max = text(redrive, "maxReceiveCount").unwrap_or("3".into());
            let policy = serde_json::json!({"deadLetterTargetArn": target, "maxReceiveCount": max}).to_string();
            create = create.attributes(QueueAttributeName::RedrivePolicy, policy);
        }
        let url = create.send().await.map_err(|e| sdk_err("create queue")(aws_err(&e)))?.queue_url.unwrap_or_default();
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| sdk_err("queue attributes")(aws_err(&e)))?
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .unwrap_or_default();
        let attributes = HashMap::from([("Arn".to_owned(), arn), ("QueueName".to_owned(), name)]);
        physical.insert(id, Physical { reference: url, attributes });
    }

    let s3 = aws::s3(sdk);
    for (id, props) in template.resources_of("AWS::S3::Bucket") {
        let name = name_for(&props, "BucketName", &id, &physical)?.to_lowercase();
        s3.create_bucket().bucket(&name).send().await.map_err(|e| sdk_err("create bucket")(aws_err(&e)))?;
        let attributes = HashMap::from([("Arn".to_owned(), format!("arn:aws:s3:::{name}"))]);
        physical.insert(id, Physical { reference: name, attributes });
    }

    // Secrets: the functions read them at start, as they would from Secrets Manager on AWS.
    let secrets = aws_sdk_secretsmanager::Client::new(sdk);
    for (id, props) in template.resources_of("AWS::SecretsManager::Secret") {
        let resolver =
            Resolver { stack_name, region: REGION, physical: &physical, parameters, conditions: template.conditions() };
        if let Some(condition) = template.resource_condition(&id)
            && !resolver.condition(&condition)?
        {
            continue;
        }
        let value = match props.get("SecretString") {
            Some(value) => resolver.resolve(value)?,
            None => continue,
        };
        let name = name_for(&props, "Name", &id, &physical)?;
        let created = secrets
            .create_secret()
            .name(&name)
            .secret_string(value)
            .send()
            .await
            .map_err(|e| sdk_err("create secret")(aws_err(&e)))?;
        let arn = created.arn().unwrap_or_default().to_owned();
        physical.insert(id, Physical { reference: arn, attributes: HashMap::new() });
    }

    // State machines last: their definitions name other resources (the queues they send to).
    let sfn = aws_sdk_sfn::Client::new(sdk);
    for (id, props) in template.resources_of("AWS::Serverless::StateMachine") {
        let name = name_for(&props, "Name", &id, &physical)?;
        let resolver =
            Resolver { stack_name, region: REGION, physical: &physical, parameters, conditions: template.conditions() };
        let definition = state_machine_definition(template, &props, &resolver)?;
        let kind = text(&props, "Type").unwrap_or("STANDARD".into());
        let created = sfn
            .create_state_machine()
            .name(&name)
            .definition(definition)
            // The emulator checks the role's form, not its permissions.
            .role_arn(format!("arn:aws:iam::123456789012:role/{name}"))
            .r#type(StateMachineType::from(kind.as_str()))
            .send()
            .await
            .map_err(|e| sdk_err("create state machine")(aws_err(&e)))?;
        let arn = created.state_machine_arn().to_owned();
        let attributes = HashMap::from([("Arn".to_owned(), arn.clone()), ("Name".to_owned(), name)]);
        // `!Ref` of a state machine is its ARN.
        physical.insert(id, Physical { reference: arn, attributes });
    }
    Ok(physical)
}

/// A state machine's definition: the file its `DefinitionUri` names (relative to the template),
/// each `${Name}` of its `DefinitionSubstitutions` replaced by that value resolved, as SAM does.
fn state_machine_definition(template: &Template, props: &Value, resolver: &Resolver) -> Result<String, LocalError> {
    let uri = props.get("DefinitionUri").and_then(Value::as_str).ok_or_else(|| {
        LocalError::Template("a state machine runs locally only from a DefinitionUri that is a file path".into())
    })?;
    let path = template.dir().join(uri);
    let mut definition = std::fs::read_to_string(&path).map_err(|e| LocalError::Io {
        what: "read a state machine definition",
        detail: format!("{}: {e}", path.display()),
    })?;
    if let Some(substitutions) = props.get("DefinitionSubstitutions").and_then(Value::as_mapping) {
        for (name, value) in substitutions {
            let name = name.as_str().ok_or_else(|| LocalError::Template("a non-string substitution name".into()))?;
            definition = definition.replace(&format!("${{{name}}}"), &resolver.resolve(value)?);
        }
    }
    Ok(definition)
}

fn aws_err(err: &(impl std::error::Error + 'static)) -> String {
    aws_sdk_dynamodb::error::DisplayErrorContext(err).to_string()
}
