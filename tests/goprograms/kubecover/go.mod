module example.com/kubecover

go 1.22
