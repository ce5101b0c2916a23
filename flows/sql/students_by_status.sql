-- Students with the given status, for the partner's roster.
SELECT student_id, first_name, last_name, email, program, entry_year
FROM students
WHERE status = :status
ORDER BY student_id
