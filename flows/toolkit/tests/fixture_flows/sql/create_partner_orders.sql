-- The table the partner's order files load into, made by the first run. No primary
-- key on purpose: a file loaded twice would show as twice the rows.
CREATE TABLE IF NOT EXISTS partner_orders (
    order_id integer NOT NULL,
    customer text NOT NULL,
    placed_on date NOT NULL,
    amount numeric(12, 2) NOT NULL
)
