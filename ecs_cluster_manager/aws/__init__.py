"""The AWS layer: one transport and small gateways (ECS, SQS, CloudFormation); the only code that imports boto3."""
