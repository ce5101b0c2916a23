SELECT order_id, customer, amount_cents
FROM orders
ORDER BY order_id
