-- The monolith's own tables and its transactional outbox.
--
-- Every change to a customer or an order is written in the same transaction as one outbox row per
-- domain event. The outbox keeps Debezium's default column names (id, aggregatetype, aggregateid,
-- type, payload, tracingspancontext) so a team can switch CDC tools without touching the monolith.

CREATE TABLE customers (
    id              uuid           PRIMARY KEY,
    name            text           NOT NULL,
    credit_limit    numeric(14, 2) NOT NULL CHECK (credit_limit >= 0),
    credit_reserved numeric(14, 2) NOT NULL DEFAULT 0 CHECK (credit_reserved >= 0),
    -- Starts at 1 and grows by 1 with every change; copied into outbox.aggregate_version.
    version         bigint         NOT NULL
);

CREATE TABLE orders (
    id          uuid           PRIMARY KEY,
    customer_id uuid           NOT NULL REFERENCES customers (id),
    order_total numeric(14, 2) NOT NULL CHECK (order_total > 0),
    state       text           NOT NULL CHECK (state IN ('APPROVED', 'REJECTED', 'CANCELLED')),
    version     bigint         NOT NULL
);

CREATE INDEX orders_customer_id_idx ON orders (customer_id);

CREATE TABLE outbox (
    id                 uuid        PRIMARY KEY,
    aggregatetype      text        NOT NULL,
    aggregateid        text        NOT NULL,
    type               text        NOT NULL,
    -- The aggregate's full state after the change, plus event-specific fields.
    payload            jsonb       NOT NULL,
    -- The aggregate's version after the change: consumers keep the highest one they have seen.
    aggregate_version  bigint      NOT NULL,
    occurred_at        timestamptz NOT NULL DEFAULT now(),
    -- A W3C traceparent ("00-<trace-id>-<parent-id>-<flags>").
    tracingspancontext text        NULL
);
