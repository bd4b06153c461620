"""The DynamoDB calls of the lease table, typed: a narrow client Protocol and the shapes of
its requests and answers. Only the parameters and answer fields esm uses are named."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NotRequired, Protocol, TypedDict, Unpack, cast

__all__ = [
    "AttributeValue",
    "DynamoDBClient",
    "Item",
    "ScanInput",
    "UpdateItemInput",
    "dynamodb_client",
]


class AttributeValue(TypedDict, total=False):
    """One attribute in DynamoDB's wire form: exactly one of these keys is present."""

    S: str
    N: str
    SS: list[str]
    M: dict[str, AttributeValue]
    BOOL: bool
    NULL: bool


Item = dict[str, AttributeValue]


class KeySchemaElement(TypedDict):
    AttributeName: str
    KeyType: str


class AttributeDefinition(TypedDict):
    AttributeName: str
    AttributeType: str


class TableDescription(TypedDict, total=False):
    TableName: str
    TableStatus: str
    KeySchema: list[KeySchemaElement]
    AttributeDefinitions: list[AttributeDefinition]


class DescribeTableOutput(TypedDict):
    Table: TableDescription


class CreateTableOutput(TypedDict):
    TableDescription: TableDescription


class ScanInput(TypedDict):
    TableName: str
    FilterExpression: NotRequired[str]
    ExpressionAttributeNames: NotRequired[dict[str, str]]
    ExpressionAttributeValues: NotRequired[dict[str, AttributeValue]]
    ExclusiveStartKey: NotRequired[Item]


class ScanOutput(TypedDict):
    Items: list[Item]
    LastEvaluatedKey: NotRequired[Item]


class GetItemOutput(TypedDict):
    Item: NotRequired[Item]


class UpdateItemInput(TypedDict):
    TableName: str
    Key: Item
    UpdateExpression: str
    ConditionExpression: NotRequired[str]
    ExpressionAttributeNames: NotRequired[dict[str, str]]
    ExpressionAttributeValues: NotRequired[dict[str, AttributeValue]]


class DynamoDBClient(Protocol):
    """The DynamoDB calls the lease table makes. Each raises the client's exception on
    failure, which `esm.aws.errors.translate_error` turns into esm's error tree."""

    async def describe_table(self, *, TableName: str) -> DescribeTableOutput: ...

    async def create_table(
        self,
        *,
        TableName: str,
        KeySchema: list[KeySchemaElement],
        AttributeDefinitions: list[AttributeDefinition],
        BillingMode: str,
    ) -> CreateTableOutput: ...

    async def scan(self, **request: Unpack[ScanInput]) -> ScanOutput: ...

    async def get_item(
        self, *, TableName: str, Key: Mapping[str, AttributeValue], ConsistentRead: bool
    ) -> GetItemOutput: ...

    async def put_item(
        self,
        *,
        TableName: str,
        Item: Mapping[str, AttributeValue],
        ConditionExpression: str,
    ) -> object: ...

    async def update_item(self, **request: Unpack[UpdateItemInput]) -> object: ...


def dynamodb_client(client: Any) -> DynamoDBClient:
    """An aiobotocore "dynamodb" client as the typed client the lease table uses
    (aiobotocore's clients carry no types: this is the one place that says it fits; the
    integration tests run it against moto)."""
    return cast(DynamoDBClient, client)
