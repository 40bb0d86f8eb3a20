module example.com/agentdemo

go 1.22
