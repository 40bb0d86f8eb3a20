module example.com/covsample

go 1.22
