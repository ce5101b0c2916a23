-- Every enrollment of one term, with its course.
SELECT e.student_id, c.code AS course_code, c.title AS course_title,
       c.department, c.credits, e.grade
FROM enrollments AS e
JOIN courses AS c ON c.course_id = e.course_id
WHERE e.term = :term
ORDER BY c.code, e.student_id
