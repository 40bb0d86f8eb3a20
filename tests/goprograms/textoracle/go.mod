module textoracle

go 1.22
