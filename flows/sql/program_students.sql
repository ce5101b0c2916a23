-- One row per student: program, entry year and status, for headcounts.
SELECT program, entry_year, status
FROM students
