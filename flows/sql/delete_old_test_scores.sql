-- Scores taken before a day: placement tests count for a few years only.
DELETE FROM test_scores
WHERE taken_at < :oldest
