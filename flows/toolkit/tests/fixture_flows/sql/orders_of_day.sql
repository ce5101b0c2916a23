SELECT order_id, customer, placed_on, amount_cents
FROM orders
WHERE placed_on = :day
ORDER BY order_id
