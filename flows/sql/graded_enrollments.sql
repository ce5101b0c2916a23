-- Every graded enrollment up to and including one term, for grade point averages.
SELECT e.student_id, e.term, c.credits, e.grade
FROM enrollments AS e
JOIN courses AS c ON c.course_id = e.course_id
WHERE e.grade IS NOT NULL AND e.term <= :term
ORDER BY e.student_id, e.term
