-- The partner's placement-test scores, one row per student and test; made by the
-- inbound flow's first run. The key is what an upsert of a corrected file replaces.
CREATE TABLE IF NOT EXISTS test_scores (
    student_id integer NOT NULL,
    test text NOT NULL,
    score numeric(5, 1) NOT NULL,
    taken_at timestamp NOT NULL,
    PRIMARY KEY (student_id, test)
)
