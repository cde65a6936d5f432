-- The `products` projection's tables, written only by its projector. Each row remembers
-- the sequence of the last event applied to it (`version`). A rebuild creates a copy of
-- these tables with versioned names (`projections::versions`), so keep every name here
-- in the projection's `tables` list.

CREATE TABLE IF NOT EXISTS products (
    product_id UUID PRIMARY KEY,
    sku        TEXT        NOT NULL,
    name       TEXT        NOT NULL,
    -- Revision 2 (ProductAdded v2); added to older tables by `added_columns`.
    category   TEXT        NOT NULL DEFAULT 'uncategorised',
    price      BIGINT      NOT NULL,
    -- Units received: initial stock plus restocks (the product's own partition).
    received   BIGINT      NOT NULL,
    version    BIGINT      NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- Units reserved and sold per product, moved by reservation events. Those are keyed by
-- order, so they reach the projector on other partitions than the product's own events
-- and may come first: they add to this row, created on first use, never to `products`.
-- available = received - reserved - sold, computed when read.
CREATE TABLE IF NOT EXISTS product_stock (
    product_id UUID PRIMARY KEY,
    reserved   BIGINT NOT NULL DEFAULT 0,
    sold       BIGINT NOT NULL DEFAULT 0
);
